//! Where the Redis nodes are: one server (`REDIS_URL`), a Redis Cluster
//! (`REDIS_CLUSTER_NODES`) or a primary watched by Sentinels (`REDIS_SENTINEL_NODES`,
//! `REDIS_SENTINEL_MASTER`). With a cluster or Sentinels, `REDIS_URL` still supplies the
//! user, password, database and TLS (`rediss://`), so secrets are given one way only.

/// One `host:port`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Node {
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl Node {
    /// `host:port`.
    pub fn new(host: impl Into<String>, port: u16) -> Node {
        Node { host: host.into(), port }
    }

    /// Parses `host:port,host:port,…` (spaces around entries allowed). `None` for an empty
    /// entry, a missing or zero port, or a host with characters a URL host cannot hold.
    pub fn parse_list(raw: &str) -> Option<Vec<Node>> {
        raw.split(',').map(|entry| Node::parse(entry.trim())).collect()
    }

    fn parse(entry: &str) -> Option<Node> {
        let (host, port) = entry.rsplit_once(':')?;
        let port: u16 = port.parse().ok().filter(|port| *port != 0)?;
        let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        let valid = !host.is_empty()
            && host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':'));
        valid.then(|| Node::new(host, port))
    }
}

impl std::fmt::Display for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// How the services reach Redis.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Topology {
    /// One server (or a primary behind a fixed address): `REDIS_URL`.
    #[default]
    Single,
    /// A Redis Cluster, found through these seed nodes.
    Cluster {
        /// Seed nodes; the rest of the cluster is discovered from them.
        nodes: Vec<Node>,
    },
    /// A primary whose address these Sentinels give, asked again after a failover.
    Sentinel {
        /// The Sentinels.
        nodes: Vec<Node>,
        /// The master name they monitor.
        master: String,
    },
}

impl std::fmt::Display for Topology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |nodes: &[Node]| nodes.iter().map(Node::to_string).collect::<Vec<_>>().join(",");
        match self {
            Topology::Single => f.write_str("single server"),
            Topology::Cluster { nodes } => write!(f, "cluster via {}", list(nodes)),
            Topology::Sentinel { nodes, master } => write!(f, "sentinel master {master} via {}", list(nodes)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_lists_parse_and_reject_what_is_no_address() {
        assert_eq!(
            Node::parse_list("a:1, 10.0.0.2:7002,[::1]:7003").unwrap(),
            vec![Node::new("a", 1), Node::new("10.0.0.2", 7002), Node::new("::1", 7003)]
        );
        for bad in ["", "a", "a:", ":1", "a:0", "a:70000", "a:1,", "a b:1", "a/b:1", "redis://a:1"] {
            assert!(Node::parse_list(bad).is_none(), "{bad}");
        }
        assert_eq!(Node::new("::1", 1).to_string(), "[::1]:1");
    }
}
