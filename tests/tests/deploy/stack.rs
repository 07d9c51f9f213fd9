//! The running compose stack, as scripts/test-deploy hands it over: the load balancer's
//! and the producer's published URLs, and the commands that act on containers.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use streamgate::keys::{DEFAULT_PREFIX, Keys};
use streamgate::topic::{InstanceId, Topic};

/// The settings scripts/test-deploy passes, and what each holds.
const ENVIRONMENT: [(&str, &str); 8] = [
    ("STREAMGATE_DEPLOY_URL", "the load balancer's published URL"),
    ("STREAMGATE_DEPLOY_PRODUCER_URL", "the producer's published URL"),
    ("STREAMGATE_DEPLOY_COMPOSE", "a docker-compose command for the stack (file, override, project)"),
    ("STREAMGATE_DEPLOY_DOCKER", "the docker client"),
    ("STREAMGATE_DEPLOY_TLS_ADDRESS", "the load balancer's published HTTPS address (host:port)"),
    ("STREAMGATE_DEPLOY_TLS_CA", "the certificate (PEM) the load balancer's HTTPS port presents"),
    ("STREAMGATE_DEPLOY_SECRETS", "the stack's secrets (deploy/make-secrets.sh DIR)"),
    (
        "STREAMGATE_DEPLOY_REDIS_SERVICE",
        "the compose service redis-cli runs in (a cluster node for the cluster stack)",
    ),
];

/// The compose file's `KEY_PREFIX` (the default).
const KEY_PREFIX: &str = DEFAULT_PREFIX;

/// The gateway's `MAX_TOPIC_BYTES` (its default: the compose file does not set it).
const MAX_TOPIC_BYTES: usize = 256;

/// How long a gateway container may take to become healthy (its HEALTHCHECK: 10 s start
/// period, 10 s interval).
const HEALTHY_WAIT: Duration = Duration::from_secs(90);

/// The stack under test.
pub struct Stack {
    /// The load balancer, e.g. `http://127.0.0.1:8080`.
    pub lb_url: String,
    /// The producer, e.g. `http://127.0.0.1:8090`.
    pub producer_url: String,
    /// The load balancer's HTTPS port, e.g. `127.0.0.1:8443`.
    pub tls_address: String,
    /// The certificate it presents (self-signed, so its own CA).
    pub tls_ca: PathBuf,
    /// The publish token (`publish-token` among the secrets).
    pub publish_token: String,
    /// The Redis ACL user `admin`'s password: the default user may only PING.
    redis_admin_password: String,
    redis_service: String,
    compose: PathBuf,
    docker: PathBuf,
    /// Key names, with the compose file's prefix.
    pub keys: Keys,
}

/// One gateway replica: its container and the instance id it registered under.
#[derive(Debug, Clone)]
pub struct Gateway {
    /// The container id.
    pub container: String,
    /// The instance id (its host name, which is the short container id, plus a suffix).
    pub instance: InstanceId,
}

impl Stack {
    /// The stack scripts/test-deploy started. Panics, naming what is missing, when run
    /// any other way: these tests need the real deployment.
    pub fn from_env() -> Stack {
        let value = |name: &str| {
            std::env::var(name).unwrap_or_else(|_| {
                let expected: Vec<String> =
                    ENVIRONMENT.iter().map(|(name, what)| format!("  {name}: {what}")).collect();
                panic!(
                    "{name} is not set. These tests run against the Docker deployment that \
                     scripts/test-deploy starts; run that script. It sets:\n{}",
                    expected.join("\n")
                )
            })
        };
        Stack {
            lb_url: value(ENVIRONMENT[0].0),
            producer_url: value(ENVIRONMENT[1].0),
            compose: value(ENVIRONMENT[2].0).into(),
            docker: value(ENVIRONMENT[3].0).into(),
            tls_address: value(ENVIRONMENT[4].0),
            tls_ca: value(ENVIRONMENT[5].0).into(),
            publish_token: secret(&value(ENVIRONMENT[6].0), "publish-token"),
            redis_admin_password: secret(&value(ENVIRONMENT[6].0), "redis-admin-password"),
            redis_service: value(ENVIRONMENT[7].0),
            keys: Keys::new(KEY_PREFIX).expect("the default prefix"),
        }
    }

    /// Runs `docker-compose ARGS` for the stack and returns its stdout; panics on failure.
    pub async fn compose(&self, args: &[&str]) -> String {
        run(&self.compose, args).await
    }

    /// Runs `docker ARGS` and returns its stdout; panics on failure.
    pub async fn docker(&self, args: &[&str]) -> String {
        run(&self.docker, args).await
    }

    /// `redis-cli ARGS` inside the Redis container (Redis is not published), as the ACL
    /// user `admin`, following cluster redirections. Its output is raw (no terminal): one
    /// line per value.
    pub async fn redis(&self, args: &[&str]) -> String {
        self.redis_on(&self.redis_service, args).await
    }

    /// `redis-cli ARGS` on the Redis node that is the compose service `service`.
    pub async fn redis_on(&self, service: &str, args: &[&str]) -> String {
        let mut command =
            vec!["exec", "-T", service, "redis-cli", "-c", "--no-auth-warning", "--user", "admin", "--pass"];
        command.push(&self.redis_admin_password);
        command.extend_from_slice(args);
        self.compose(&command).await
    }

    /// The running gateway replicas.
    pub async fn gateways(&self) -> Vec<Gateway> {
        let containers = self.compose(&["ps", "-q", "gateway"]).await;
        let instances = self.redis(&["ZRANGE", &self.keys.instances(), "0", "-1"]).await;
        let mut gateways = Vec::new();
        for container in containers.split_whitespace() {
            let state = self
                .docker(&["inspect", "--format", "{{.State.Running}} {{.Config.Hostname}}", container])
                .await;
            let [running, hostname] = state.split_whitespace().collect::<Vec<_>>()[..] else {
                panic!("unexpected docker inspect output: {state}")
            };
            if running != "true" {
                continue;
            }
            // A container restarted by its restart policy registers again under a new
            // suffix: the newest entry of the index (ZRANGE orders by heartbeat) is its own.
            let instance =
                instances.lines().rfind(|id| id.starts_with(&format!("{hostname}-"))).unwrap_or_else(|| {
                    panic!("no instance of gateway container {hostname} in Redis: {instances}")
                });
            gateways.push(Gateway {
                container: container.to_owned(),
                instance: InstanceId::parse(instance).expect("an instance id"),
            });
        }
        gateways
    }

    /// Brings the gateway service to `replicas` running containers (starting stopped ones,
    /// adding or removing replicas) and waits until every one is healthy.
    pub async fn scale_gateways(&self, replicas: usize) {
        self.compose(&[
            "up",
            "--detach",
            "--no-build",
            "--no-recreate",
            "--scale",
            &format!("gateway={replicas}"),
        ])
        .await;
        let deadline = tokio::time::Instant::now() + HEALTHY_WAIT;
        loop {
            let containers = self.compose(&["ps", "-q", "gateway"]).await;
            let mut healthy = 0;
            for container in containers.split_whitespace() {
                let health =
                    self.docker(&["inspect", "--format", "{{.State.Health.Status}}", container]).await;
                healthy += usize::from(health.trim() == "healthy");
            }
            if healthy == replicas && containers.split_whitespace().count() == replicas {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{healthy} of {replicas} gateways healthy after {HEALTHY_WAIT:?}"
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Waits until new streams through the load balancer have reached every running
    /// gateway: the load balancer finds replicas by name, so one added by scaling up must
    /// get clients too.
    pub async fn wait_until_the_load_balancer_reaches_every_gateway(&self, deadline: Duration) {
        let expected: BTreeSet<String> =
            self.gateways().await.iter().map(|g| g.instance.as_ref().to_owned()).collect();
        let until = tokio::time::Instant::now() + deadline;
        let mut seen = BTreeSet::new();
        let client = reqwest::Client::new();
        while seen != expected {
            assert!(
                tokio::time::Instant::now() < until,
                "after {deadline:?} the load balancer reached only {seen:?} of {expected:?}"
            );
            let response = client
                .get(format!("{}/events?topic=lb-probe", self.lb_url))
                .header("accept", "text/event-stream")
                .send()
                .await
                .expect("the load balancer answers");
            if let Some(instance) = response.headers().get("x-streamgate-instance") {
                seen.insert(instance.to_str().expect("an ASCII header").to_owned());
            }
            drop(response);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Whether `instance` has a field in `topic`'s group hash (subscribers there).
    pub async fn is_registered(&self, instance: &InstanceId, topic: &str) -> bool {
        let topic = Topic::parse(topic, MAX_TOPIC_BYTES).expect("a topic");
        let fields = self.redis(&["HKEYS", &self.keys.group(&topic)]).await;
        fields.lines().any(|field| field == instance.as_ref())
    }

    /// Whether `key` exists.
    pub async fn exists(&self, key: &str) -> bool {
        self.redis(&["EXISTS", key]).await.trim() == "1"
    }
}

/// The first line of the secret file `name` in `dir`.
fn secret(dir: &str, name: &str) -> String {
    let path = std::path::Path::new(dir).join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
    text.lines().next().unwrap_or_default().to_owned()
}

/// Runs `program args`; returns stdout, panics with stderr on failure.
async fn run(program: &PathBuf, args: &[&str]) -> String {
    let output = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap_or_else(|error| panic!("cannot run {}: {error}", program.display()));
    assert!(
        output.status.success(),
        "{} {} failed ({}):\n{}",
        program.display(),
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8 output")
}
