//! Two network namespaces joined by a veth pair, for tests and benchmarks of what crosses a
//! link one way (diode mode): an OT side and an IT side, IPv6 off, ARP off with static
//! neighbour entries, a firewall in the OT namespace that drops every packet arriving from the
//! IT side, and optional random loss at the IT side's input (iptables `statistic`: this kernel
//! has no netem). Needs root, `ip` (iproute2) and `iptables`, which `./scripts/test` installs.

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// The OT side's address on the link.
pub const OT_ADDRESS: &str = "10.77.0.1";
/// The IT side's address on the link.
pub const IT_ADDRESS: &str = "10.77.0.2";

/// Runs a command, panicking with its standard error if it fails; returns its standard output.
pub fn run(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?} failed (this test needs root, ip and iptables): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The two namespaces and the link, removed when dropped.
pub struct Link {
    pub ot: String,
    pub it: String,
    pub it_dev: String,
}

impl Link {
    /// `tag`: one letter, so that tests running at once have links of their own.
    pub fn make(tag: char, loss: f64) -> Self {
        let id = std::process::id() % 100_000;
        let link = Self { ot: format!("alot{tag}{id}"), it: format!("alit{tag}{id}"), it_dev: format!("vit{tag}{id}") };
        let (vot, vit) = (format!("vot{tag}{id}"), format!("vit{tag}{id}"));
        for ns in [&link.ot, &link.it] {
            let _ = Command::new("ip").args(["netns", "del", ns]).stderr(std::process::Stdio::null()).status();
            run(&["ip", "netns", "add", ns]);
            // No IPv6: neighbour discovery would otherwise cross the link both ways.
            for key in ["net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"] {
                run(&["ip", "netns", "exec", ns, "sysctl", "-qw", key]);
            }
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        run(&["ip", "link", "add", &vot, "type", "veth", "peer", "name", &vit]);
        run(&["ip", "link", "set", &vot, "netns", &link.ot]);
        run(&["ip", "link", "set", &vit, "netns", &link.it]);
        for (ns, dev, address) in [(&link.ot, &vot, OT_ADDRESS), (&link.it, &vit, IT_ADDRESS)] {
            run(&["ip", "-n", ns, "addr", "add", &format!("{address}/24"), "dev", dev]);
            // No ARP either way: the neighbours are written down below.
            run(&["ip", "-n", ns, "link", "set", dev, "arp", "off", "up"]);
        }
        let mac = |ns: &str, dev: &str| {
            let text = run(&["ip", "-n", ns, "-o", "link", "show", dev]);
            text.split_whitespace().skip_while(|w| *w != "link/ether").nth(1).unwrap().to_owned()
        };
        let (mac_ot, mac_it) = (mac(&link.ot, &vot), mac(&link.it, &vit));
        run(&[
            "ip",
            "-n",
            &link.ot,
            "neigh",
            "replace",
            IT_ADDRESS,
            "lladdr",
            &mac_it,
            "dev",
            &vot,
            "nud",
            "permanent",
        ]);
        run(&[
            "ip",
            "-n",
            &link.it,
            "neigh",
            "replace",
            OT_ADDRESS,
            "lladdr",
            &mac_ot,
            "dev",
            &vit,
            "nud",
            "permanent",
        ]);
        // The OT side takes nothing from the IT side.
        run(&["ip", "netns", "exec", &link.ot, "iptables", "-A", "INPUT", "-i", &vot, "-j", "DROP"]);
        // Random loss on the way in to the IT side.
        if loss > 0.0 {
            let loss = loss.to_string();
            run(&[
                "ip",
                "netns",
                "exec",
                &link.it,
                "iptables",
                "-A",
                "INPUT",
                "-i",
                &vit,
                "-m",
                "statistic",
                "--mode",
                "random",
                "--probability",
                &loss,
                "-j",
                "DROP",
            ]);
        }
        link
    }

    /// Every packet into the IT side dropped (`true`), or not any more.
    pub fn cut(&self, cut: bool) {
        let action = if cut { "-I" } else { "-D" };
        run(&["ip", "netns", "exec", &self.it, "iptables", action, "INPUT", "-i", &self.it_dev, "-j", "DROP"]);
    }

    pub fn exec(&self, ns: &str, program: &Path, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]).arg(program).args(args);
        c
    }

    /// Packets the OT side's firewall dropped.
    pub fn ot_dropped(&self) -> u64 {
        let text = run(&["ip", "netns", "exec", &self.ot, "iptables", "-L", "INPUT", "-v", "-n", "-x"]);
        text.lines()
            .filter(|l| l.contains("DROP"))
            .map(|l| l.split_whitespace().next().unwrap().parse::<u64>().unwrap())
            .sum()
    }

    /// The OT namespace's UDP sockets: (local port, receive queue bytes, drops).
    pub fn ot_udp_sockets(&self) -> Vec<(u16, u64, u64)> {
        let text = run(&["ip", "netns", "exec", &self.ot, "cat", "/proc/net/udp"]);
        text.lines()
            .skip(1)
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                let port = u16::from_str_radix(f[1].rsplit(':').next().unwrap(), 16).unwrap();
                let rx_queue = u64::from_str_radix(f[4].rsplit(':').next().unwrap(), 16).unwrap();
                (port, rx_queue, f.last().unwrap().parse().unwrap())
            })
            .collect()
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        for ns in [&self.ot, &self.it] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// A child process killed (SIGKILL) when dropped.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Stops a process the way Ctrl-C does, and waits for it to end by itself.
pub fn interrupt(mut child: Killed) {
    run(&["kill", "-INT", &child.0.id().to_string()]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "did not stop within 20 s of Ctrl-C");
        std::thread::sleep(Duration::from_millis(50));
    }
}
