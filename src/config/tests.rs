use clap::{CommandFactory, FromArgMatches};

use super::limits::RESERVED_FDS;
use super::*;
use crate::auth::JoinPolicy;

#[test]
fn flags_default_to_the_contract() {
    // The flags with their environment fallbacks removed: what `switchboard` alone means,
    // whatever SWITCHBOARD_* variables the test runs under.
    let mut command = Config::command();
    let ids: Vec<_> = command
        .get_arguments()
        .map(|arg| arg.get_id().clone())
        .collect();
    for id in ids {
        command = command.mut_arg(id, |arg| arg.env(None::<&str>));
    }
    assert!(command.get_arguments().all(|arg| arg.get_env().is_none()));
    let matches = command
        .try_get_matches_from(["switchboard"])
        .expect("no flags parse");
    let parsed = Config::from_arg_matches(&matches).expect("a config");
    assert_eq!(parsed, Config::default());
}

#[test]
fn durations_and_switches_parse() {
    let config = Config::parse_from([
        "switchboard",
        "--session-ttl",
        "2m",
        "--presence",
        "false",
        "--cors-origin",
        "https://a.example, https://b.example",
    ]);
    assert_eq!(config.session_ttl, Duration::from_secs(120));
    assert!(!config.presence);
    assert_eq!(
        config.cors_origins,
        ["https://a.example", "https://b.example"]
    );
}

#[test]
fn room_flags_parse() {
    let config = Config::parse_from([
        "switchboard",
        "--allow-rooms",
        "lobby, team-7:*",
        "--direct-messages",
        "shared-room",
        "--room-presence-limit",
        "0",
    ]);
    let settings = config.hub_settings();
    let room = |r| crate::identity::RoomName::parse(r).unwrap();
    assert!(settings.allow_rooms.allows(&room("team-7:dev")));
    assert!(!settings.allow_rooms.allows(&room("dev")));
    assert!(settings.shared_room_only);
    assert_eq!(settings.room_presence_limit, 0);
    assert!(Config::try_parse_from(["switchboard", "--allow-rooms", "a b"]).is_err());
    assert!(Config::try_parse_from(["switchboard", "--max-rooms", "0"]).is_err());
}

#[test]
fn a_wildcard_origin_is_refused_when_parsed() {
    let err = Config::try_parse_from(["switchboard", "--cors-origin", "*"]).unwrap_err();
    assert!(err.to_string().contains("`*` is not supported"), "{err}");
}

#[test]
fn listen_takes_what_people_type() {
    let loopback = |port| SocketAddr::from(([127, 0, 0, 1], port));
    assert_eq!(parse_listen("localhost:4000"), Ok(loopback(4000)));
    assert_eq!(parse_listen(":4000"), Ok(loopback(4000)));
    assert_eq!(parse_listen("4000"), Ok(loopback(4000)));
    assert_eq!(parse_listen("127.0.0.1:4001"), Ok(loopback(4001)));
    assert_eq!(
        parse_listen("0.0.0.0:4000"),
        Ok(SocketAddr::from(([0, 0, 0, 0], 4000)))
    );
    assert_eq!(
        parse_listen("[::1]:4000"),
        Ok("[::1]:4000".parse().unwrap())
    );
    for bad in [
        "",
        "localhost",
        "localhost:99999",
        "::1:4000",
        "no such host:4000",
    ] {
        assert!(parse_listen(bad).is_err(), "{bad:?} was accepted");
    }
    let err = Config::try_parse_from(["switchboard", "--listen", "localhost:port"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("--listen"), "{err}");
}

#[test]
fn log_filters_are_checked_and_formats_are_not_filters() {
    assert_eq!(parse_log_filter("info"), Ok("info".to_owned()));
    assert!(parse_log_filter("switchboard=debug,warn").is_ok());
    assert!(parse_log_filter("info,[").is_err());
    assert!(parse_log_filter("switchboard=loud").is_err());
    let err = parse_log_filter("json").unwrap_err();
    assert!(err.contains("--log-format json"), "{err}");
    let config = Config::parse_from(["switchboard", "--log-format", "json"]);
    assert_eq!(config.log_format, LogFormat::Json);
}

#[test]
fn the_join_policy_needs_exactly_one_key_with_jwt_and_none_without() {
    let secret = std::env::temp_dir().join(format!("switchboard-cfg-{}", std::process::id()));
    std::fs::write(&secret, "a-secret-of-at-least-thirty-two-bytes\n").unwrap();
    let config = |args: &[&str]| {
        Config::try_parse_from(["switchboard"].iter().chain(args)).expect("flags parse")
    };
    let path = secret.to_str().unwrap();
    assert!(matches!(config(&[]).join_policy(), Ok(JoinPolicy::Open)));
    let jwt = config(&["--auth", "jwt", "--jwt-secret-file", path]);
    assert!(matches!(jwt.join_policy(), Ok(JoinPolicy::Jwt(_))));
    for (args, needle) in [
        (&["--auth", "jwt"][..], "--auth jwt needs a key"),
        (&["--jwt-secret-file", path], "only used with --auth jwt"),
        (
            &[
                "--auth",
                "jwt",
                "--jwt-secret-file",
                path,
                "--jwt-public-key-file",
                path,
            ],
            "exclude each other",
        ),
        (
            &["--auth", "jwt", "--jwt-public-key-file", "/no/such/key.pem"],
            "--jwt-public-key-file: cannot read /no/such/key.pem",
        ),
    ] {
        let err = config(args).join_policy().unwrap_err();
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains('\n'), "one line: {err}");
    }
    std::fs::write(&secret, "short").unwrap();
    let err = jwt.join_policy().unwrap_err();
    assert!(err.starts_with("--jwt-secret-file: "), "{err}");
    std::fs::remove_file(&secret).ok();
}

#[test]
fn the_stream_limit_leaves_reserved_descriptors() {
    let limit = Config::default().stream_limit() as u64;
    if let Some(fds) = Config::open_file_limit() {
        assert_eq!(limit, fds.saturating_sub(RESERVED_FDS).max(1));
    }
    let fixed = Config {
        max_streams: Some(7),
        ..Config::default()
    };
    assert_eq!(fixed.stream_limit(), 7);
}
