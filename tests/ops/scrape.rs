//! What a scraper sees: every series from the first scrape, and a drain, on
//! `--metrics-listen`, until the process has drained.

use std::time::Duration;

use crate::support::{Instance, POLL, WAIT, body_text, free_port, sample, send};

/// The samples of `family` in a classic-format exposition, as (series, value), and the type
/// its `# TYPE` line gives (which names a counter with its `_total`).
fn family_samples(text: &str, family: &str) -> (Option<String>, Vec<(String, f64)>) {
    let declared = [
        format!("# TYPE {family} "),
        format!("# TYPE {family}_total "),
    ];
    let kind = text.lines().find_map(|line| {
        declared
            .iter()
            .find_map(|declared| line.strip_prefix(declared.as_str()).map(str::to_owned))
    });
    let samples = text
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' '))
        .filter(|(series, _)| {
            let name = series.split('{').next().unwrap();
            ["", "_total", "_bucket", "_sum", "_count"]
                .iter()
                .any(|suffix| name.strip_suffix(suffix) == Some(family))
        })
        .map(|(series, value)| (series.to_owned(), value.parse().expect("a number")))
        .collect();
    (kind, samples)
}

/// The first scrape, before any other request, already has every family the code registers
/// (`switchboard::metric_families`) with its series: each counter and histogram at 0, each
/// request series the route table names (which the docs test holds to openapi.yaml), so a
/// dashboard or an alert reads 0 where it would otherwise read nothing.
#[tokio::test]
async fn the_first_scrape_has_every_family_with_its_series_at_zero() {
    let server = Instance::start("first scrape", &[]).await;
    let text = body_text(server.get("/metrics").await).await;
    let families = switchboard::metric_families();
    assert!(families.len() >= 18, "{families:?}");
    for family in &families {
        let (kind, samples) = family_samples(&text, family);
        assert!(!samples.is_empty(), "{family} has no series:\n{text}");
        let kind = kind.unwrap_or_else(|| panic!("{family}: no # TYPE line"));
        if kind == "counter" || kind == "histogram" {
            for (series, value) in samples {
                assert_eq!(value, 0.0, "{series} before any request");
            }
        }
    }
    let mut routes: Vec<(&str, &[u16])> = switchboard::ROUTES
        .iter()
        .map(|&(_, route, statuses)| (route, statuses))
        .collect();
    routes.push(("static", &[200, 304, 404]));
    for (route, statuses) in routes {
        let count = format!("switchboard_http_request_duration_seconds_count{{route=\"{route}\"}}");
        assert_eq!(sample(&text, &count), Some(0.0), "{count}");
        for status in statuses {
            let series =
                format!("switchboard_http_requests_total{{route=\"{route}\",status=\"{status}\"}}");
            assert_eq!(sample(&text, &series), Some(0.0), "{series}");
        }
    }
}

/// With `--metrics-listen`, `/metrics` is served through the shutdown, and says so:
/// `switchboard_draining` is 0, then 1 once the public listener has closed.
#[tokio::test]
async fn a_drain_is_scraped_on_the_metrics_address() {
    let address = format!("127.0.0.1:{}", free_port());
    // An open keep-alive connection holds the stop for the drain window.
    let args = ["--metrics-listen", &address, "--drain-window", "5s"];
    let mut server = Instance::start("draining metrics", &args).await;
    // A new connection for each scrape, as after a scraper's restart: the listener must be
    // open, not only a kept-alive connection.
    let scraper = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let draining = || async {
        let response = send(scraper.get(format!("http://{address}/metrics"))).await;
        sample(&body_text(response).await, "switchboard_draining")
    };
    assert_eq!(draining().await, Some(0.0));
    assert_eq!(server.get("/healthz").await.status(), 200);

    server.send_sigterm();
    server.log_line("shutting down").await;
    // Set just after that line: polled, while the drain window holds the process.
    let deadline = tokio::time::Instant::now() + WAIT;
    while draining().await != Some(1.0) {
        assert!(tokio::time::Instant::now() < deadline, "not draining");
        tokio::time::sleep(POLL).await;
    }
    assert!(
        server
            .wait_for_exit(WAIT + Duration::from_secs(5))
            .await
            .success()
    );
}
