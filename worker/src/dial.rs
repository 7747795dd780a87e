//! Reaching the master: resolving its address, one client endpoint per
//! address family, and the QUIC/TLS handshake with each address in turn.
//!
//! Both the connection loop ([`crate::connection`]) and enrollment
//! ([`crate::enroll`]) dial the master the same way; this module is that one
//! way, so neither has to import the other.

use crate::tls::{self, explain_connection_error};
use crate::workdir::MasterAddress;
use quinn::{Connection, Endpoint, VarInt};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;
use tokio::time::timeout;

/// How long the QUIC handshake with one address may take.
/// Short: after an outage, a fresh attempt gets through sooner than the
/// retransmissions of an old one, whose intervals keep doubling.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long to let the endpoint tell the master goodbye on shutdown (the
/// close frame goes out at once; this only bounds the wait for the drain).
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(1);

/// One client endpoint per address family, made on first use.
#[derive(Default)]
pub(crate) struct Endpoints {
    v4: Option<Endpoint>,
    v6: Option<Endpoint>,
}

impl Endpoints {
    fn for_address(&mut self, addr: &SocketAddr) -> std::io::Result<Endpoint> {
        let (slot, bind): (_, SocketAddr) = if addr.is_ipv6() {
            (&mut self.v6, (Ipv6Addr::UNSPECIFIED, 0).into())
        } else {
            (&mut self.v4, (Ipv4Addr::UNSPECIFIED, 0).into())
        };
        if let Some(endpoint) = slot {
            return Ok(endpoint.clone());
        }
        let endpoint = Endpoint::client(bind)?;
        *slot = Some(endpoint.clone());
        Ok(endpoint)
    }

    fn all(&self) -> impl Iterator<Item = &Endpoint> {
        self.v4.iter().chain(self.v6.iter())
    }

    /// Close every endpoint with `reason` and let each tell the master
    /// goodbye (bounded by [`GOODBYE_TIMEOUT`]).
    pub(crate) async fn close(&self, reason: &[u8]) {
        for endpoint in self.all() {
            endpoint.close(VarInt::from_u32(0), reason);
            if timeout(GOODBYE_TIMEOUT, endpoint.wait_idle())
                .await
                .is_err()
            {
                tracing::debug!("the endpoint did not become idle in time");
            }
        }
    }
}

/// Why a connection attempt did not end in a welcome.
#[derive(Debug)]
pub(crate) struct AttemptFailure {
    pub(crate) message: String,
    /// The master (or its TLS) said no, as opposed to not being reachable.
    pub(crate) refused: bool,
}

impl AttemptFailure {
    pub(crate) fn unreachable(message: String) -> Self {
        AttemptFailure {
            message,
            refused: false,
        }
    }
}

/// Resolve the master (`shown` is its address as the user wrote it) and dial
/// each of its addresses until one completes the QUIC and TLS handshake.
/// Shared by the connection loop and enrollment.
pub(crate) async fn dial_master(
    master: &MasterAddress,
    shown: &str,
    client_config: &quinn::ClientConfig,
    endpoints: &mut Endpoints,
) -> Result<(Connection, SocketAddr), AttemptFailure> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((master.host.as_str(), master.port))
        .await
        .map_err(|e| {
            AttemptFailure::unreachable(format!("could not resolve the master {shown}: {e}"))
        })?
        .collect();
    if addrs.is_empty() {
        return Err(AttemptFailure::unreachable(format!(
            "the master's host name {} has no address",
            master.host
        )));
    }
    let mut failures = Vec::new();
    let mut tls_failed = false;
    for addr in &addrs {
        match dial(*addr, &master.host, client_config, endpoints).await {
            Ok(conn) => return Ok((conn, *addr)),
            Err(failure) => {
                tls_failed |= failure.refused;
                failures.push((addr, failure.message));
            }
        }
    }
    let message = match &failures[..] {
        [(only, why)] if only.to_string() == shown => {
            format!("could not connect to the master at {only}: {why}")
        }
        [(only, why)] => {
            format!("could not connect to the master {shown} at {only}: {why}")
        }
        _ => {
            let each: Vec<String> = failures
                .iter()
                .map(|(addr, why)| format!("{addr}: {why}"))
                .collect();
            format!(
                "could not connect to the master {shown}: {}",
                each.join("; ")
            )
        }
    };
    Err(AttemptFailure {
        message,
        refused: tls_failed,
    })
}

/// The QUIC (and TLS) handshake with one address.
async fn dial(
    addr: SocketAddr,
    host: &str,
    client_config: &quinn::ClientConfig,
    endpoints: &mut Endpoints,
) -> Result<Connection, AttemptFailure> {
    let endpoint = endpoints
        .for_address(&addr)
        .map_err(|e| AttemptFailure::unreachable(format!("could not open a UDP socket: {e}")))?;
    let connecting = endpoint
        .connect_with(client_config.clone(), addr, host)
        .map_err(|e| AttemptFailure::unreachable(e.to_string()))?;
    match timeout(HANDSHAKE_TIMEOUT, connecting).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(AttemptFailure {
            message: explain_connection_error(&e),
            refused: tls::is_tls_failure(&e),
        }),
        Err(_) => Err(AttemptFailure::unreachable(format!(
            "no answer within {} s (is the master running and UDP port {} reachable?)",
            HANDSHAKE_TIMEOUT.as_secs(),
            addr.port()
        ))),
    }
}
