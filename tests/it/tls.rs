//! TLS failures end to end: a server whose certificate nobody trusts (generated per test) stands
//! in for a proxy or antivirus that intercepts HTTPS, the most common reason a downloader "cannot
//! connect" on a user's machine.

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::support::{FAST_RETRIES, Sandbox, civitai_dl, run};

/// A TLS server on 127.0.0.1 presenting a fresh self-signed certificate; it counts the
/// connections it accepts and serves nothing else.
struct UntrustedServer {
    url: String,
    connections: Arc<AtomicU64>,
}

impl UntrustedServer {
    fn start() -> UntrustedServer {
        let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
            .expect("generate a certificate");
        let chain = vec![cert.cert.der().clone()];
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server certificate");
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!(
            "https://127.0.0.1:{}",
            listener.local_addr().expect("addr").port()
        );
        let connections = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&connections);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                counted.fetch_add(1, Ordering::SeqCst);
                let config = Arc::clone(&config);
                std::thread::spawn(move || {
                    let Ok(mut tls) = rustls::ServerConnection::new(config) else {
                        return;
                    };
                    // The client gives up on the certificate; this side only has to offer it.
                    while tls.is_handshaking() {
                        if tls.complete_io(&mut stream).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        UntrustedServer { url, connections }
    }
}

#[test]
fn a_refused_certificate_is_named_with_the_fix_and_not_retried() {
    let server = UntrustedServer::start();
    let sandbox = Sandbox::new();
    let mut cmd = civitai_dl(&server.url, &sandbox, FAST_RETRIES);
    cmd.arg("download").arg("-o").arg(&sandbox.out).arg("4201");
    let started = Instant::now();
    let ran = run(cmd);
    ran.expect_code(1);
    assert!(
        ran.stderr.contains("certificate") && ran.stderr.contains("SSL_CERT_FILE"),
        "the cause and the fix are named: {}",
        ran.stderr
    );
    assert_eq!(
        server.connections.load(Ordering::SeqCst),
        1,
        "a refused certificate is refused again: no retries\n{}",
        ran.stderr
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}
