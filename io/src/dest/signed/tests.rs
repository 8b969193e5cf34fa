//! The signed client's tests: answers read, headers built, a local server's misbehaviour.
#![allow(clippy::unwrap_used)]

mod upload_listing {
    #![allow(clippy::unwrap_used)]
    use super::super::{answers, parse_iso8601_ms};

    #[test]
    fn uploads_of_exactly_one_key_are_read_with_their_start() {
        let xml = "<ListMultipartUploadsResult><Upload><Key>a/b</Key><UploadId>u1</UploadId><Initiated>2026-12-06T04:53:17.250Z</Initiated></Upload><Upload><Key>a/bc</Key><UploadId>u2</UploadId></Upload><Upload><Key>a/b</Key><UploadId>u3</UploadId><Initiated>1970-01-01T00:00:01Z</Initiated></Upload></ListMultipartUploadsResult>";
        let got: Vec<_> = answers::uploads(xml, "a/b")
            .into_iter()
            .map(|(id, t)| (id, t.and_then(|t| parse_iso8601_ms(&t))))
            .collect();
        assert_eq!(got, [("u1".into(), Some(1_796_532_797_250)), ("u3".into(), Some(1000))]);
        assert_eq!(parse_iso8601_ms("2000-03-01T00:00:00.5Z"), Some(951_868_800_500));
        assert_eq!(parse_iso8601_ms("2000-13-01T00:00:00Z"), None);
        assert_eq!(parse_iso8601_ms("garbage"), None);
    }
}

mod client {
    #[test]
    fn finds_the_newest_version_of_exactly_the_key() {
        let xml = "<ListVersionsResult><DeleteMarker><Key>a&amp;b</Key><VersionId>m1</VersionId></DeleteMarker>\
            <Version><Key>a&amp;b</Key><VersionId>v2</VersionId></Version>\
            <Version><Key>a&amp;b</Key><VersionId>v1</VersionId></Version>\
            <Version><Key>a&amp;bc</Key><VersionId>x</VersionId></Version></ListVersionsResult>";
        assert_eq!(super::super::answers::newest_version(xml, "a&b").as_deref(), Some("v2"));
        assert_eq!(super::super::answers::newest_version(xml, "a&bc").as_deref(), Some("x"));
        assert_eq!(super::super::answers::newest_version(xml, "a"), None);
    }

    use super::super::*;

    #[test]
    fn the_tagging_header_url_encodes_keys_and_values() {
        let tags = vec![("a b".to_owned(), "c&d=e".to_owned()), ("k".to_owned(), String::new())];
        assert_eq!(tagging_header(&tags), "a%20b=c%26d%3De&k=");
    }

    #[test]
    fn answers_are_read_and_errors_in_200_bodies_classified() {
        let copied = "<CopyObjectResult><ETag>&quot;abc&quot;</ETag></CopyObjectResult>";
        assert_eq!(read_answer(copied, "k").2.as_deref(), Some("\"abc\""));
        assert_eq!(read_answer(copied, "k").3, None);
        let created = "<InitiateMultipartUploadResult><UploadId>u-1</UploadId></InitiateMultipartUploadResult>";
        assert_eq!(read_answer(created, "k").1.as_deref(), Some("u-1"));
        for (code, status) in [("InternalError", 500), ("SlowDown", 503), ("InvalidPart", 400)] {
            let body = format!("<Error><Code>{code}</Code><Message>m</Message></Error>");
            assert_eq!(read_answer(&body, "k").3, Some(status), "{code}");
        }
        assert_eq!(read_answer("<Error><Message>no code</Message></Error>", "k").3, None);
    }

    #[tokio::test]
    async fn a_header_value_http_cannot_carry_is_refused_not_retried() {
        let s3 = plain_http_client("http://127.0.0.1:1");
        let meta = ReplicaMeta {
            user_metadata: vec![("note".into(), "two\nlines".into())],
            ..ReplicaMeta::default()
        };
        let e = s3.put_object("k", Bytes::from_static(b"x"), &meta).await.unwrap_err();
        assert!(matches!(&e, SignedError::Status(400, m) if m.contains("x-amz-meta-note")), "{e}");
        assert!(!e.is_transient());
        // Non-ASCII UTF-8 is not refused here (it is not a control character).
        let meta = ReplicaMeta {
            user_metadata: vec![("note".into(), "café".into())],
            ..ReplicaMeta::default()
        };
        let e = s3.put_object("k", Bytes::from_static(b"x"), &meta).await.unwrap_err();
        assert!(matches!(e, SignedError::Transport(_)), "{e}");
    }

    /// Answers one request on a loopback listener with `answer`; returns the endpoint and
    /// the request's head (request line and headers) as received. With `hold`, the
    /// connection then stays open and the task never ends (abort it).
    async fn one_request(
        answer: &'static str,
        hold: bool,
    ) -> (String, tokio::task::JoinHandle<String>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                assert_eq!(conn.read(&mut byte).await.unwrap(), 1, "connection closed early");
                head.push(byte[0]);
            }
            conn.write_all(answer.as_bytes()).await.unwrap();
            if hold {
                std::future::pending::<()>().await;
            }
            String::from_utf8(head).unwrap()
        });
        (endpoint, server)
    }

    /// Bucket `bkt` at `endpoint`, path-style, with throwaway credentials.
    fn test_options(endpoint: &str, allow_http: bool) -> S3Options {
        S3Options {
            endpoint: endpoint.into(),
            bucket: "bkt".into(),
            region: "us-east-1".into(),
            access_key_id: "k".into(),
            secret_access_key: "s".into(),
            allow_http,
            virtual_hosted_style: false,
        }
    }

    /// A client of [`test_options`] over plain HTTP.
    fn plain_http_client(endpoint: &str) -> SignedS3 {
        SignedS3::new(test_options(endpoint, true))
    }

    #[tokio::test]
    async fn a_range_answered_with_the_whole_object_is_not_taken_for_the_range() {
        // A server that ignores `Range`: 200 with all ten bytes for a range of two.
        let answer = "HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n0123456789";
        let (endpoint, server) = one_request(answer, false).await;
        let s3 = plain_http_client(&endpoint);
        let e = s3.get_object("logs/", "v1", Some(2..4)).await.unwrap_err();
        assert!(e.is_transient(), "{e}");
        let head = server.await.unwrap();
        assert!(head.starts_with("GET /bkt/logs/?versionId=v1 HTTP/1.1\r\n"), "{head}");
        assert!(head.to_ascii_lowercase().contains("\r\nrange: bytes=2-3\r\n"), "{head}");
    }

    #[tokio::test]
    async fn the_path_goes_out_as_signed_dot_segments_included() {
        let (endpoint, server) = one_request(
            "HTTP/1.1 204 No Content\r\nx-amz-version-id: marker-1\r\ncontent-length: 0\r\n\r\n",
            false,
        )
        .await;
        let s3 = SignedS3::new(S3Options {
            access_key_id: "AKID".into(),
            secret_access_key: "secret".into(),
            ..test_options(&endpoint, true)
        });
        // S3 keys may contain `.` and `..` segments; a URL parser would resolve them and the
        // call would reach `bkt/b/c` with a signature for another path.
        let marker = s3.delete_object("a/../b/./c d").await.unwrap();
        assert_eq!(marker.as_deref(), Some("marker-1"));
        let head = server.await.unwrap();
        let mut lines = head.lines();
        assert_eq!(lines.next(), Some("DELETE /bkt/a/../b/./c%20d HTTP/1.1"));
        let headers: Vec<(String, String)> = lines
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (n, v) = l.split_once(':').unwrap();
                (n.to_ascii_lowercase(), v.trim().to_owned())
            })
            .collect();
        let host = endpoint.trim_start_matches("http://");
        let hosts: Vec<&str> =
            headers.iter().filter(|(n, _)| n == "host").map(|(_, v)| v.as_str()).collect();
        assert_eq!(hosts, [host], "one Host header, the one signed");
        // The request verifies as sent, path and headers as received.
        let mut creds = sigv4::Credentials::default();
        creds.insert("AKID", "secret");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap())
            .unwrap();
        let req = sigv4::SignedRequest {
            method: "DELETE",
            raw_path: "/bkt/a/../b/./c%20d",
            raw_query: "",
            headers: &headers,
            body: b"",
        };
        assert_eq!(creds.verify(&req, now).unwrap(), "AKID");
    }

    #[tokio::test]
    async fn plain_http_is_refused_unless_allowed_and_errors_name_their_cause() {
        let e = SignedS3::new(test_options("http://127.0.0.1:1", false)).delete_object("k").await;
        assert!(
            matches!(&e, Err(SignedError::Status(400, m)) if m.contains("allow_http")),
            "{e:?}"
        );
        assert!(!e.unwrap_err().is_transient(), "a configuration error is not retried");
        let e = SignedS3::new(test_options("ftp://127.0.0.1:1", true)).delete_object("k").await;
        assert!(matches!(&e, Err(SignedError::Status(400, m)) if m.contains("scheme")), "{e:?}");
        // Nothing listens on port 1: the connection error says so, beyond hyper's own
        // one-word summary.
        let e = SignedS3::new(test_options("http://127.0.0.1:1", true)).delete_object("k").await;
        assert!(
            matches!(&e, Err(SignedError::Transport(m)) if m.to_lowercase().contains("refused")),
            "{e:?}"
        );
    }

    #[tokio::test]
    async fn a_server_that_stops_answering_fails_the_call_as_transient() {
        // Accepts and reads, never answers (the head, then the body).
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((conn, _)) = listener.accept().await {
                held.push(conn);
            }
        });
        let mut s3 = plain_http_client(&endpoint);
        s3.timeouts.answer = Duration::from_millis(200);
        let e = s3.delete_object("k").await.unwrap_err();
        assert!(matches!(&e, SignedError::Transport(m) if m.contains("no answer")), "{e}");
        assert!(e.is_transient());
        // Headers, then a body that never ends (the connection stays open).
        let answer = "HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n<CopyObjectResult>";
        let (endpoint, server) = one_request(answer, true).await;
        let mut s3 = SignedS3::new(S3Options { endpoint, ..s3.opts.clone() });
        s3.timeouts.body = Duration::from_millis(200);
        let e = s3.delete_object("k").await.unwrap_err();
        assert!(matches!(&e, SignedError::Transport(m) if m.contains("body")), "{e}");
        assert!(e.is_transient());
        server.abort();
    }

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }
}
