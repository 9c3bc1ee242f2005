//! https grants: a guest's requests, through a real host on a real broker, over
//! TLS to real TLS servers on loopback whose certificates come from a CA made at
//! test time (openssl) and trusted through `[pipeline.http] ca_file`. The granted
//! host answers; a server whose certificate names another host is refused during
//! the handshake, before any request reaches it; the same CA is not trusted by a
//! pipeline without `ca_file` (only the Mozilla roots are); plain http to the
//! https-only grant is refused before any connection.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use ferry_host::config::Config;
use ferry_host::host::Host;
use ferry_tests::*;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Runs openssl in `dir`; the test needs the openssl CLI.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("the openssl CLI runs");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A CA (`ca.pem`) and, signed by it, a server certificate `<name>.pem` (key
/// `<name>.key`) for each `(name, subjectAltName)`.
fn make_certificates(dir: &Path, servers: &[(&str, &str)]) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=ferry test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    for (name, san) in servers {
        let ext = format!("{name}.ext");
        std::fs::write(
            dir.join(&ext),
            format!("subjectAltName={san}\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n"),
        )
        .unwrap();
        let (key, csr, pem) = (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"));
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                &format!("/CN={name}"),
            ],
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "2",
                "-extfile",
                &ext,
            ],
        );
    }
}

/// What a TLS server saw: connections accepted, and requests answered (after a
/// completed handshake).
#[derive(Default)]
struct Seen {
    connections: AtomicUsize,
    requests: AtomicUsize,
}

/// A customers service over TLS on loopback with `<name>.pem`: `c-1` exists.
fn tls_customers(dir: &Path, name: &str) -> (u16, Arc<Seen>) {
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(dir.join(format!("{name}.pem"))).unwrap().collect::<Result<_, _>>().unwrap();
    let key = PrivateKeyDer::from_pem_file(dir.join(format!("{name}.key"))).unwrap();
    #[expect(deprecated, reason = "the host's provider: ring, without post-quantum key exchange")]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Seen::default());
    let counted = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            counted.connections.fetch_add(1, Ordering::SeqCst);
            let (config, seen) = (config.clone(), counted.clone());
            std::thread::spawn(move || {
                let connection = rustls::ServerConnection::new(config).unwrap();
                let mut tls = rustls::StreamOwned::new(connection, stream);
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match tls.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => return, // the handshake or the request failed
                    }
                }
                seen.requests.fetch_add(1, Ordering::SeqCst);
                let head = String::from_utf8_lossy(&head);
                let (status, body) = match head.split_whitespace().nth(1).unwrap_or("/") {
                    "/customers/c-1" => ("200 OK", r#"{"id":"c-1","tier":"gold"}"#),
                    _ => ("404 Not Found", ""),
                };
                let answer =
                    format!("HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
                let _ = tls.write_all(answer.as_bytes());
                tls.conn.send_close_notify();
                let _ = tls.flush();
            });
        }
    });
    (port, seen)
}

/// A host running the `enrich` test guest (it GETs the URL in each record and
/// emits `<status> <body>` or `error <kind>` to `out`, keyed by the URL) in two
/// pipelines granted `allow`: one trusting the CA of `ca_file`, one only the
/// Mozilla roots.
fn config(brokers: &str, inputs: [&str; 2], allow: &[String], ca_file: &Path) -> Config {
    let pipeline = |name: &str, input: &str, extra: &str| {
        format!(
            r#"
            [[pipeline]]
            name = "{name}"
            inputs = ["{input}"]
            group = "{name}"
            component = "{component}"
            batch_size = 1
            max_wait_ms = 10
            output_topics = ["out"]
            commit = {{ policy = "per-batch" }}
            [pipeline.http]
            allow = {allow:?}
            request_timeout_ms = 3000
            {extra}
            "#,
            component = guest("ferry-guest-enrich").display()
        )
    };
    let text = format!(
        "brokers = \"{brokers}\"\n{}\n{}",
        pipeline(&unique("private-ca"), inputs[0], &format!("ca_file = {:?}", ca_file.display().to_string())),
        pipeline(&unique("roots-only"), inputs[1], ""),
    );
    Config::parse(&text).unwrap()
}

#[test]
fn https_goes_only_to_the_granted_host_with_a_certificate_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    make_certificates(dir, &[("good", "IP:127.0.0.1"), ("other", "DNS:other.example")]);
    let (good, good_seen) = tls_customers(dir, "good");
    let (other, other_seen) = tls_customers(dir, "other");
    let allow = [format!("https://127.0.0.1:{good}"), format!("https://127.0.0.1:{other}")];

    let broker = Embedded::start();
    let brokers = broker.brokers();
    let inputs = [unique("urls"), unique("urls")];
    for input in &inputs {
        broker.create_topic(input, 1);
    }
    broker.create_topic("out", 1);
    let config = config(&brokers, [&inputs[0], &inputs[1]], &allow, &dir.join("ca.pem"));
    let host = Host::start(&config).unwrap();

    let trusted = format!("https://127.0.0.1:{good}/customers/c-1");
    let wrong_name = format!("https://127.0.0.1:{other}/customers/c-1");
    let plain = format!("http://127.0.0.1:{good}/customers/c-1");
    let untrusted = format!("https://127.0.0.1:{good}/customers/c-1?roots-only");
    produce(&brokers, &inputs[0], 1, &[trusted.clone(), wrong_name.clone(), plain.clone()]);
    produce(&brokers, &inputs[1], 1, std::slice::from_ref(&untrusted));
    let expected: BTreeMap<String, String> = [
        // The granted host, its certificate from the operator's CA: answered over TLS.
        (trusted, r#"200 {"id":"c-1","tier":"gold"}"#),
        // A granted address whose server shows a certificate for another name.
        (wrong_name, "error Refused"),
        // Plain http to the https-only grant.
        (plain, "error Refused"),
        // The same server without the operator's CA: only the Mozilla roots are trusted.
        (untrusted, "error Refused"),
    ]
    .into_iter()
    .map(|(url, answer)| (url, answer.to_owned()))
    .collect();
    let answers = || -> BTreeMap<String, String> {
        read_all(&brokers, "out").into_iter().map(|read| (read.key, read.value)).collect()
    };
    wait_until_or_explain("every URL answered", || answers().len() >= expected.len(), || format!("{:#?}", answers()));
    host.shutdown_flag().store(true, Ordering::Relaxed);
    host.wait();
    assert_eq!(answers(), expected);
    assert_eq!(good_seen.requests.load(Ordering::SeqCst), 1, "one request, over the verified connection");
    assert_eq!(other_seen.requests.load(Ordering::SeqCst), 0, "no request over a connection to the wrong name");
    assert_eq!(
        good_seen.connections.load(Ordering::SeqCst),
        2,
        "the trusted request and the untrusted handshake; none for plain http"
    );
}
