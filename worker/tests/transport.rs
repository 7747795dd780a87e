//! `FrameReader` over a real QUIC stream: frames written in small, slow pieces
//! arrive intact even when every read races a timer that keeps winning.

use moonbot_worker::protocol::Frame;
use moonbot_worker::transport::FrameReader;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls_pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use std::sync::Arc;
use std::time::Duration;

fn endpoints() -> (quinn::Endpoint, quinn::Endpoint) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let der = CertificateDer::from(cert.cert.der().to_vec());
    let key = PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der());
    let server_tls = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![der.clone()], key.into())
        .unwrap();
    let server = quinn::Endpoint::server(
        quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(server_tls).unwrap())),
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der).unwrap();
    let client_tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut client = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    client.set_default_client_config(quinn::ClientConfig::new(Arc::new(
        QuicClientConfig::try_from(client_tls).unwrap(),
    )));
    (server, client)
}

#[tokio::test]
async fn frames_survive_reads_cancelled_by_select() {
    let (server, client) = endpoints();
    let addr = server.local_addr().unwrap();
    let frames: Vec<Frame> = (0..200)
        .map(|i| match i % 3 {
            0 => Frame::Stdout(vec![b'o'; 10 + i * 37]),
            1 => Frame::Stderr(format!("line {i}\n").into_bytes()),
            _ => Frame::Json(format!("{{\"n\":{i}}}").into_bytes()),
        })
        .collect();
    let sent = frames.clone();
    let writer = tokio::spawn(async move {
        let conn = client.connect(addr, "localhost").unwrap().await.unwrap();
        let (mut send, _recv) = conn.open_bi().await.unwrap();
        let mut bytes = Vec::new();
        for f in &sent {
            f.encode_into(&mut bytes);
        }
        // Pieces that cut through length prefixes and payloads alike.
        for piece in bytes.chunks(7) {
            send.write_all(piece).await.unwrap();
            tokio::task::yield_now().await;
        }
        send.finish().unwrap();
        conn.closed().await;
    });
    let conn = server.accept().await.unwrap().await.unwrap();
    let (_send, recv) = conn.accept_bi().await.unwrap();
    let mut reader = FrameReader::new(recv);
    let mut received = Vec::new();
    let mut cancelled = 0;
    loop {
        tokio::select! {
            frame = reader.next() => match frame.unwrap() {
                Some(f) => received.push(f),
                None => break,
            },
            _ = tokio::time::sleep(Duration::from_micros(50)) => cancelled += 1,
        }
    }
    assert_eq!(received, frames);
    assert!(
        cancelled > 0,
        "the race never cancelled a read; the test proves nothing"
    );
    conn.close(0u32.into(), b"done");
    writer.await.unwrap();
}
