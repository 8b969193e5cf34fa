//! Entry points for the fuzz targets (`fuzz/fuzz_targets/admin_request.rs`): the admin
//! endpoint's request handling, driven as the listener drives it, against a running engine on
//! embedded defaults in a temporary directory (started once per process).

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http_body_util::Full;
use s3repl::sigv4::{Credentials, Request as SigRequest, amz_date, authorization, sha256_hex};

use crate::run::admin::Admin;

const KEY: &str = "AKIDFUZZ";
const SECRET: &str = "fuzz-secret";

struct Harness {
    runtime: tokio::runtime::Runtime,
    admin: Arc<Admin>,
    /// Keeps the engine running (the admin holds only a weak handle).
    _engine: s3repl::pipeline::EngineHandle,
}

fn harness() -> Option<&'static Harness> {
    static H: OnceLock<Option<Harness>> = OnceLock::new();
    H.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .ok()?;
        let dir = std::env::temp_dir().join(format!("s3repl-fuzz-admin-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut settings =
            crate::run::settings::Settings { data_dir: Some(dir), ..Default::default() };
        settings.admin.listen = None;
        let mut credentials = Credentials::default();
        credentials.insert(KEY, SECRET);
        let started = runtime.block_on(async {
            crate::run::start(&settings, credentials, std::time::Duration::from_secs(1))
        });
        let (engine, admin) = started.ok()?;
        Some(Harness { runtime, admin, _engine: engine })
    })
    .as_ref()
}

/// A request read from fuzz input: `METHOD TARGET` on the first line, `name: value` header
/// lines, an empty line, then the body.
struct Parsed {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn parse(data: &[u8]) -> Option<Parsed> {
    let split = data.windows(2).position(|w| w == b"\n\n").unwrap_or(data.len());
    let head = std::str::from_utf8(data.get(..split)?).ok()?;
    let body = data.get(split + 2..).unwrap_or_default().to_vec();
    let mut lines = head.lines();
    let (method, target) = lines.next()?.split_once(' ')?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Some(Parsed { method: method.to_owned(), target: target.to_owned(), headers, body })
}

/// Runs one request through the handler; `None` when hyper would not have built it (an invalid
/// method, target or header), else its status.
fn send(h: &Harness, p: &Parsed, extra: &[(String, String)]) -> Option<u16> {
    let mut b = hyper::Request::builder().method(p.method.as_str()).uri(p.target.as_str());
    for (n, v) in p.headers.iter().chain(extra) {
        b = b.header(n.as_str(), v.as_str());
    }
    let declared = p.body.len().to_string();
    let req =
        b.header("content-length", declared).body(Full::new(Bytes::from(p.body.clone()))).ok()?;
    let reply = h.runtime.block_on(h.admin.clone().handle(req)).ok()?;
    Some(reply.status().as_u16())
}

/// Feeds arbitrary input to the admin endpoint's request handling. It must never panic; an
/// unsigned request never succeeds (but for the two open routes); and the same request signed
/// as the AWS CLI signs it, with its Content-MD5, is judged without an internal error.
pub fn admin_request(data: &[u8]) {
    let Some(h) = harness() else { return };
    let Some(mut p) = parse(data) else { return };
    p.headers.retain(|(n, _)| n != "content-length" && n != "transfer-encoding");
    if let Some(status) = send(h, &p, &[]) {
        let path = p.target.split('?').next().unwrap_or("");
        let open = p.method == "GET" && (path == "/metrics" || path == "/-/health");
        let signed = p.headers.iter().any(|(n, _)| n == "authorization");
        assert!(
            open || signed || status >= 400,
            "unsigned {} {} answered {status}",
            p.method,
            p.target
        );
    }
    // Signed properly.
    let Ok(uri) = p.target.parse::<hyper::Uri>() else { return };
    p.headers.retain(|(n, _)| {
        !matches!(
            n.as_str(),
            "authorization" | "host" | "x-amz-date" | "x-amz-content-sha256" | "content-md5"
        ) && !n.is_empty()
            && n.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    });
    let signed_at = amz_date(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0)),
    );
    let payload = sha256_hex(&p.body);
    let md5 = {
        use base64::Engine as _;
        use md5::Digest as _;
        base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(&p.body))
    };
    let mut headers = p.headers.clone();
    headers.push(("host".into(), "127.0.0.1:9080".into()));
    headers.push(("x-amz-date".into(), signed_at.clone()));
    headers.push(("x-amz-content-sha256".into(), payload.clone()));
    headers.push(("content-md5".into(), md5));
    let req = SigRequest {
        method: &p.method,
        raw_path: uri.path(),
        raw_query: uri.query().unwrap_or(""),
        headers: &headers,
    };
    let auth = authorization(&req, KEY, SECRET, &signed_at, "us-east-1", &payload);
    headers.push(("authorization".into(), auth));
    let signed = Parsed { headers, ..p };
    if let Some(status) = send(h, &signed, &[]) {
        assert_ne!(
            status, 500,
            "a signed {} {} was an internal error",
            signed.method, signed.target
        );
    }
}

/// Parses `data` as an S3 event notification delivery (the webhook intake's parser): never
/// panics; whatever parses has a bucket, a key and, for events that replicate, a version id,
/// and sequencers that order as their hex values.
pub fn intake_events(data: &[u8]) {
    if let Ok(events) = crate::run::events::parse_delivery(data) {
        for e in events {
            assert!(!e.bucket.is_empty() && !e.key.is_empty());
            if !matches!(e.kind, crate::run::events::Kind::Skipped(_)) {
                assert!(!e.version_id.is_empty());
            }
            assert!(e.sequencer.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_lowercase()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fuzz_entry_point_judges_a_few_requests() {
        let config = b"<ReplicationConfiguration><Role>arn:aws:iam::123456789012:role/r</Role><Rule><ID>a</ID><Priority>1</Priority><Status>Enabled</Status><Filter/><DeleteMarkerReplication><Status>Disabled</Status></DeleteMarkerReplication><Destination><Bucket>arn:aws:s3:::dst-bucket</Bucket></Destination></Rule></ReplicationConfiguration>";
        let mut put = b"PUT /src-bucket?replication\nx-extra: 1\n\n".to_vec();
        put.extend_from_slice(config);
        admin_request(&put);
        admin_request(b"GET /-/health\n\n");
        admin_request(b"GET /src-bucket?replication\n\n");
        admin_request(b"DELETE /../../x?replication\n\n");
        admin_request(b"\xff\xfe");
        let h = harness().unwrap();
        assert!(h.admin.engine.config("src-bucket").is_some(), "the signed PUT installed it");
    }
}
