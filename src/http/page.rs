//! The web client served at `/`: built into the binary from `public/`, so the server shows its
//! page wherever it is started or installed, or read from `--public-dir` when one is given
//! (to work on the page without rebuilding).
//!
//! Built-in files carry an `ETag` (their SHA-256, computed at build time), so a browser
//! revalidates with `If-None-Match` and gets `304` until the binary changes.

use std::path::PathBuf;

use rust_embed::Embed;
use tracing::warn;
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use warp::http::{HeaderValue, Method, StatusCode};
use warp::reply::{Reply, Response};

use super::error::{ApiError, ErrorCode};
use super::filters;

/// `public/`, compiled in (also in debug builds: tests serve what a release serves).
#[derive(Embed)]
#[folder = "public/"]
struct Builtin;

/// GET and HEAD of any path not taken by the API: `dir`'s files, or the built-in page when no
/// directory is given. A `dir` that is not a directory is reported once, here at start-up, and
/// the built-in page is served instead of a 404 for every path.
pub fn files(dir: Option<PathBuf>) -> BoxedFilter<(Response,)> {
    let dir = dir.filter(|dir| {
        let usable = dir.is_dir();
        if !usable {
            warn!(
                public_dir = %dir.display(),
                "--public-dir is not a directory; serving the built-in page instead"
            );
        }
        usable
    });
    let files = match dir {
        Some(dir) => warp::path::peek()
            .and(warp::fs::dir(dir))
            .map(|path: warp::path::Peek, file: warp::fs::File| {
                let mut response = file.into_response();
                if let Some(mime) = content_type(path.as_str()) {
                    response
                        .headers_mut()
                        .insert(CONTENT_TYPE, HeaderValue::from_static(mime));
                }
                response
            })
            .boxed(),
        None => warp::path::tail()
            .and(filters::raw_header(IF_NONE_MATCH.as_str()))
            .and_then(
                |tail: warp::path::Tail, if_none_match: Option<HeaderValue>| async move {
                    // A value that is not text names no version of ours: not matched.
                    let if_none_match =
                        if_none_match.and_then(|value| value.to_str().ok().map(str::to_owned));
                    builtin(tail.as_str(), if_none_match.as_deref())
                        .ok_or_else(warp::reject::not_found)
                },
            )
            .boxed(),
    };
    filters::get_or_not_found().and(files).boxed()
}

/// The admin console, `/admin` and its files under `/admin/`, always the built-in ones: only
/// with the server API on (`--api-key-file`), as it is built on it; otherwise not found, as
/// `/api/*` is.
pub fn admin(enabled: bool) -> BoxedFilter<(Response,)> {
    warp::path("admin")
        .and(warp::method())
        .and(warp::path::tail())
        .and(filters::raw_header(IF_NONE_MATCH.as_str()))
        .and_then(
            move |method: Method, tail: warp::path::Tail, if_none_match: Option<HeaderValue>| async move {
                // Answered here, not rejected: `files` would serve `--public-dir`'s copy.
                if !enabled {
                    return Ok(ApiError::no_route().into_response());
                }
                if method != Method::GET && method != Method::HEAD {
                    return Err(if tail.as_str().is_empty() {
                        warp::Rejection::from(ApiError::new(
                            StatusCode::METHOD_NOT_ALLOWED,
                            ErrorCode::MethodNotAllowed,
                            "this route does not accept that method",
                        ))
                    } else {
                        warp::reject::not_found()
                    });
                }
                let if_none_match =
                    if_none_match.and_then(|value| value.to_str().ok().map(str::to_owned));
                let file = match tail.as_str() {
                    "" => "admin/index.html".to_owned(),
                    file => format!("admin/{file}"),
                };
                builtin(&file, if_none_match.as_deref()).ok_or_else(warp::reject::not_found)
            },
        )
        .boxed()
}

/// The content type of `path` where guessing by extension gets it wrong: `.ts` is an MPEG
/// transport stream to `mime_guess`, but here it is `switchboard.d.ts`, TypeScript.
fn content_type(path: &str) -> Option<&'static str> {
    path.ends_with(".ts")
        .then_some("application/typescript; charset=utf-8")
}

/// The built-in file at `path` (`""` is `index.html`), or `304` when `if_none_match` already
/// names its version; `None` when there is no such file.
fn builtin(path: &str, if_none_match: Option<&str>) -> Option<Response> {
    let path = if path.is_empty() { "index.html" } else { path };
    let file = Builtin::get(path)?;
    let etag = format!("\"{}\"", hex::encode(&file.metadata.sha256_hash()[..16]));
    let mut response =
        if if_none_match.is_some_and(|tags| tags.split(',').any(|t| t.trim() == etag)) {
            StatusCode::NOT_MODIFIED.into_response()
        } else {
            let mut response = Response::new(file.data.into_owned().into());
            let mime = content_type(path).unwrap_or(file.metadata.mimetype());
            if let Ok(mime) = HeaderValue::from_str(mime) {
                response.headers_mut().insert(CONTENT_TYPE, mime);
            }
            response
        };
    let headers = response.headers_mut();
    headers.insert(ETAG, HeaderValue::from_str(&etag).ok()?);
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Some(response)
}
