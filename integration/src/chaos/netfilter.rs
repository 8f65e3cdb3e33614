//! Network partitions between loopback addresses with packet filter rules.
//!
//! Every server of the cluster has its own `127.0.0.x` and connects from it, so a rule that
//! drops packets from one address to another cuts exactly that link, silently (no reset: the
//! peers see a partition, not a refusal). The rules live in a chain of their own, jumped to
//! from `INPUT` (loopback packets pass `INPUT` on delivery); healing flushes the chain and
//! dropping the [`Partitions`] removes it. Needs root and `iptables`.

use std::net::Ipv4Addr;
use std::process::Command;

use anyhow::{bail, Context};

pub struct Partitions {
    chain: String,
    /// Pairs cut, both directions.
    cut: Vec<(Ipv4Addr, Ipv4Addr)>,
}

fn iptables(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("iptables")
        .args(args)
        .output()
        .context("cannot run iptables")?;
    if !out.status.success() {
        bail!(
            "iptables {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Partitions {
    /// Creates the chain; fails when iptables is missing or not permitted. Chains left by
    /// runs that were killed (their process is gone) are removed first.
    pub fn new() -> anyhow::Result<Self> {
        remove_orphans();
        let chain = format!("CHAOS{}", std::process::id());
        iptables(&["-w", "-N", &chain])?;
        if let Err(e) = iptables(&["-w", "-I", "INPUT", "-j", &chain]) {
            let _ = iptables(&["-w", "-X", &chain]);
            return Err(e);
        }
        Ok(Self {
            chain,
            cut: Vec::new(),
        })
    }

    /// Drops every packet between `a` and `b`, both ways.
    pub fn cut(&mut self, a: Ipv4Addr, b: Ipv4Addr) -> anyhow::Result<()> {
        for (s, d) in [(a, b), (b, a)] {
            iptables(&[
                "-w",
                "-A",
                &self.chain,
                "-s",
                &s.to_string(),
                "-d",
                &d.to_string(),
                "-j",
                "DROP",
            ])?;
        }
        self.cut.push((a, b));
        Ok(())
    }

    pub fn is_cut(&self) -> bool {
        !self.cut.is_empty()
    }

    /// Lifts every cut.
    pub fn heal(&mut self) -> anyhow::Result<()> {
        if self.cut.is_empty() {
            return Ok(());
        }
        self.cut.clear();
        iptables(&["-w", "-F", &self.chain])
    }
}

impl Drop for Partitions {
    fn drop(&mut self) {
        let _ = iptables(&["-w", "-D", "INPUT", "-j", &self.chain]);
        let _ = iptables(&["-w", "-F", &self.chain]);
        let _ = iptables(&["-w", "-X", &self.chain]);
    }
}

/// Removes the chains of runner processes that no longer exist.
fn remove_orphans() {
    let Ok(out) = Command::new("iptables").args(["-w", "-S"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(pid) = line.strip_prefix("-N CHAOS") else {
            continue;
        };
        if pid.parse::<u32>().is_err() || std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let chain = format!("CHAOS{pid}");
        let _ = iptables(&["-w", "-D", "INPUT", "-j", &chain]);
        let _ = iptables(&["-w", "-F", &chain]);
        let _ = iptables(&["-w", "-X", &chain]);
    }
}
