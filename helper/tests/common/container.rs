//! A "container" for the tests and the benchmark: a network namespace behind a veth pair,
//! routed and masqueraded by machine `a` as Docker's default bridge is, with its ports
//! published by DNAT; and an impostor namespace that claims a container's address.

use super::{run, Net};

/// A "container" on machine `a`: namespace `c` behind a veth pair (172.30.N.2 in `c`,
/// 172.30.N.1 in `a`), routed through `a`, which masquerades it towards `b` the way
/// Docker's default bridge does. Removed on drop.
pub struct Container {
    pub ns: String,
    pub ip: String,
}

/// Gives `dev` in namespace `ns` the address `cidr` and brings it up.
fn address(ns: &str, dev: &str, cidr: &str) {
    run(&["ip", "-n", ns, "addr", "add", cidr, "dev", dev]);
    run(&["ip", "-n", ns, "link", "set", dev, "up"]);
}

/// Removes namespace `ns` (on drop: whatever failed before).
fn remove(ns: &str) {
    let _ = std::process::Command::new("ip")
        .args(["netns", "del", ns])
        .status();
}

impl Container {
    pub fn new(net: &Net) -> Container {
        let ns = format!("{}-c", net.a);
        let n = net.n;
        run(&["ip", "netns", "add", &ns]);
        let c = Container {
            ns: ns.clone(),
            ip: format!("172.30.{n}.2"),
        };
        run(&[
            "ip", "link", "add", "ctr0", "netns", &net.a, "type", "veth", "peer", "name", "eth0",
            "netns", &ns,
        ]);
        run(&[
            "ip",
            "-n",
            &net.a,
            "addr",
            "add",
            &format!("172.30.{n}.1/24"),
            "dev",
            "ctr0",
        ]);
        run(&["ip", "-n", &net.a, "link", "set", "ctr0", "up"]);
        address(&ns, "eth0", &format!("172.30.{n}.2/24"));
        run(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        run(&[
            "ip",
            "-n",
            &ns,
            "route",
            "add",
            "default",
            "via",
            &format!("172.30.{n}.1"),
        ]);
        run(&[
            "ip",
            "netns",
            "exec",
            &net.a,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ]);
        let nft = |cmd: &str| run(&["ip", "netns", "exec", &net.a, "nft", cmd]);
        nft("add table ip ctt_test_nat");
        nft("add chain ip ctt_test_nat post { type nat hook postrouting priority 100 ; }");
        nft(&format!(
            "add rule ip ctt_test_nat post ip saddr 172.30.{n}.0/24 oifname veth0 masquerade"
        ));
        c
    }

    /// Publishes the container's TCP `port` as `a`'s `host_port` (`-p host_port:port`): a
    /// DNAT rule for what comes in from `b`, as Docker writes it.
    pub fn publish(&self, net: &Net, host_port: u16, port: u16) {
        let nft = |cmd: &str| run(&["ip", "netns", "exec", &net.a, "nft", cmd]);
        nft("add chain ip ctt_test_nat pre { type nat hook prerouting priority -100 ; }");
        nft(&format!(
            "add rule ip ctt_test_nat pre iifname veth0 tcp dport {host_port} dnat to {}:{port}",
            self.ip
        ));
    }
}

/// A namespace of its own (as any user can make with a user namespace) that gives itself
/// `ip` on a veth pair of its own, with no link to anything. Removed on drop.
pub struct Impostor(pub String);

impl Impostor {
    pub fn new(net: &Net, ip: &str) -> Impostor {
        let ns = format!("{}-i", net.a);
        run(&["ip", "netns", "add", &ns]);
        let i = Impostor(ns.clone());
        run(&[
            "ip", "-n", &ns, "link", "add", "eth0", "type", "veth", "peer", "name", "eth1",
        ]);
        address(&ns, "eth0", &format!("{ip}/24"));
        run(&["ip", "-n", &ns, "link", "set", "eth1", "up"]);
        i
    }
}

impl Drop for Impostor {
    fn drop(&mut self) {
        remove(&self.0);
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        remove(&self.ns);
    }
}
