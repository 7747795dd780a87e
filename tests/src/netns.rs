//! A worker behind a real NAT, made of network namespaces for one test.
//!
//! ```text
//!  this namespace (master)          NAT namespace                 worker namespace
//!  10.200.K.1 ── veth ── 10.200.K.2 [masquerade] 10.201.K.1 ── veth ── 10.201.K.2
//! ```
//!
//! The master runs in the test's own namespace, so the test reaches its web
//! port as usual; the worker runs in its own namespace (`ip netns exec`) and
//! reaches the master only through the NAT namespace, whose nftables
//! masquerade rewrites its address and port, as a home router does. The test
//! can cut the link (packets silently dropped, as on a dead Wi-Fi) and force a
//! NAT rebinding (a new public port: the conntrack entry flushed and the
//! masquerade port range moved).
//!
//! Needs root, `ip` (iproute2), `nft` (nftables) and `conntrack`; `.ci/run`
//! installs them. Where they are missing, [`Nat::create`] panics saying so: the
//! test fails rather than pretending.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// The namespaces, links and rules of one NAT; removed on drop.
pub struct Nat {
    k: u32,
    /// Namespace of the NAT router.
    pub router: String,
    /// Namespace the worker runs in.
    pub worker: String,
    /// The master's address as the worker dials it.
    pub master_ip: String,
    /// The NAT's public address, which the master sees the worker come from.
    pub public_ip: String,
    /// The current masquerade port range.
    ports: std::cell::Cell<(u16, u16)>,
}

fn sh(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("could not run {}: {e}", args[0]))?;
    if !out.status.success() {
        return Err(format!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn must(args: &[&str]) -> String {
    sh(args).unwrap_or_else(|e| panic!("{e}"))
}

impl Nat {
    /// Build the three-namespace NAT. Panics (with what is missing) when this
    /// machine cannot make namespaces.
    pub fn create() -> Nat {
        for tool in ["ip", "nft", "conntrack"] {
            if sh(&["sh", "-c", &format!("command -v {tool}")]).is_err() {
                panic!(
                    "this test needs `{tool}` (packages iproute2, nftables, conntrack) and root to \
                     make network namespaces; ./test installs them"
                );
            }
        }
        // Distinct per process and per NAT, so parallel tests do not collide;
        // a number whose namespace exists (another test's, or one a killed
        // run left) is skipped.
        let start = std::process::id() * 7 + NEXT.fetch_add(1, Ordering::SeqCst);
        let k = (0..200)
            .map(|i| (start + i) % 200 + 20)
            .find(|k| !std::path::Path::new(&format!("/run/netns/mbnat{k}")).exists())
            .expect("no free namespace number: remove stale ones with `ip netns del`");
        let nat = Nat {
            k,
            router: format!("mbnat{k}"),
            worker: format!("mbwrk{k}"),
            master_ip: format!("10.200.{k}.1"),
            public_ip: format!("10.200.{k}.2"),
            ports: std::cell::Cell::new((20000, 20999)),
        };
        if let Err(e) = nat.build() {
            nat.teardown();
            panic!(
                "could not make the network namespaces for the NAT test (root and a kernel with \
                 network namespaces are needed): {e}"
            );
        }
        nat
    }

    fn build(&self) -> Result<(), String> {
        let k = self.k;
        let (router, worker) = (self.router.as_str(), self.worker.as_str());
        let up = format!("mbup{k}");
        let wan = format!("mbwan{k}");
        let lan = format!("mblan{k}");
        let wlan = format!("mbwl{k}");
        sh(&["ip", "netns", "add", router])?;
        sh(&["ip", "netns", "add", worker])?;
        // Master side: this namespace ↔ router.
        sh(&[
            "ip", "link", "add", &up, "type", "veth", "peer", "name", &wan,
        ])?;
        sh(&["ip", "link", "set", &wan, "netns", router])?;
        sh(&[
            "ip",
            "addr",
            "add",
            &format!("{}/24", self.master_ip),
            "dev",
            &up,
        ])?;
        sh(&["ip", "link", "set", &up, "up"])?;
        let in_router = |args: &[&str]| {
            let mut all = vec!["ip", "netns", "exec", router];
            all.extend_from_slice(args);
            sh(&all)
        };
        in_router(&[
            "ip",
            "addr",
            "add",
            &format!("{}/24", self.public_ip),
            "dev",
            &wan,
        ])?;
        in_router(&["ip", "link", "set", &wan, "up"])?;
        in_router(&["ip", "link", "set", "lo", "up"])?;
        // Worker side: router ↔ worker.
        sh(&[
            "ip", "link", "add", &lan, "type", "veth", "peer", "name", &wlan,
        ])?;
        sh(&["ip", "link", "set", &lan, "netns", router])?;
        sh(&["ip", "link", "set", &wlan, "netns", worker])?;
        in_router(&[
            "ip",
            "addr",
            "add",
            &format!("10.201.{k}.1/24"),
            "dev",
            &lan,
        ])?;
        in_router(&["ip", "link", "set", &lan, "up"])?;
        in_router(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        let in_worker = |args: &[&str]| {
            let mut all = vec!["ip", "netns", "exec", worker];
            all.extend_from_slice(args);
            sh(&all)
        };
        in_worker(&[
            "ip",
            "addr",
            "add",
            &format!("10.201.{k}.2/24"),
            "dev",
            &wlan,
        ])?;
        in_worker(&["ip", "link", "set", &wlan, "up"])?;
        in_worker(&["ip", "link", "set", "lo", "up"])?;
        in_worker(&[
            "ip",
            "route",
            "add",
            "default",
            "via",
            &format!("10.201.{k}.1"),
        ])?;
        // The router: masquerade everything leaving on the master side, and a
        // forward chain the test can fill with a drop rule to cut the link.
        let (lo, hi) = self.ports.get();
        let rules = format!(
            "table ip mbnat {{\n\
               chain post {{ type nat hook postrouting priority srcnat; policy accept;\n\
                 oifname \"{wan}\" meta l4proto udp masquerade to :{lo}-{hi}\n\
                 oifname \"{wan}\" masquerade\n\
               }}\n\
               chain cut {{ type filter hook forward priority filter; policy accept; }}\n\
             }}\n"
        );
        self.nft(&rules)?;
        Ok(())
    }

    fn nft(&self, rules: &str) -> Result<(), String> {
        let file = std::env::temp_dir().join(format!("mbnat{}-{}.nft", self.k, std::process::id()));
        std::fs::write(&file, rules).map_err(|e| e.to_string())?;
        let result = sh(&[
            "ip",
            "netns",
            "exec",
            &self.router,
            "nft",
            "-f",
            file.to_str().unwrap(),
        ]);
        let _ = std::fs::remove_file(&file);
        result.map(|_| ())
    }

    /// Drop every packet crossing the NAT, both ways (the cable is pulled).
    pub fn cut(&self) {
        self.nft("add rule ip mbnat cut drop\n")
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Let packets through again.
    pub fn restore(&self) {
        self.nft("flush chain ip mbnat cut\n")
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Give the worker a new public port, as a router that reboots or expires
    /// its mapping does: move the masquerade port range and flush the
    /// connection tracking table. Returns the new range.
    pub fn rebind(&self) -> (u16, u16) {
        let (lo, _) = self.ports.get();
        let (lo, hi) = if lo == 20000 {
            (30000, 30999)
        } else {
            (20000, 20999)
        };
        self.ports.set((lo, hi));
        let wan = format!("mbwan{}", self.k);
        self.nft(&format!(
            "flush chain ip mbnat post\nadd rule ip mbnat post oifname \"{wan}\" meta l4proto udp masquerade to :{lo}-{hi}\nadd rule ip mbnat post oifname \"{wan}\" masquerade\n"
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        // conntrack exits 1 when there was nothing to delete.
        let _ = sh(&[
            "ip",
            "netns",
            "exec",
            &self.router,
            "conntrack",
            "-D",
            "-p",
            "udp",
        ]);
        (lo, hi)
    }

    /// The UDP mappings the router holds now (`conntrack -L`), for messages.
    pub fn mappings(&self) -> String {
        sh(&[
            "ip",
            "netns",
            "exec",
            &self.router,
            "conntrack",
            "-L",
            "-p",
            "udp",
        ])
        .unwrap_or_else(|e| e)
    }

    fn teardown(&self) {
        let _ = sh(&["ip", "netns", "del", &self.router]);
        let _ = sh(&["ip", "netns", "del", &self.worker]);
        let _ = sh(&["ip", "link", "del", &format!("mbup{}", self.k)]);
    }
}

impl Drop for Nat {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// Keep `must` for callers that want a panic with the command's error.
pub fn run_in(ns: &str, args: &[&str]) -> String {
    let mut all = vec!["ip", "netns", "exec", ns];
    all.extend_from_slice(args);
    must(&all)
}
