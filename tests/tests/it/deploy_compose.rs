//! The deployment files name the settings, hosts and ports the binaries really read.
//!
//! There is no Docker engine here, so the smoke test runs each service of
//! `deploy/docker-compose.yml` as a local process: the real binary the image's ENTRYPOINT
//! names (`deploy/Dockerfile`), with the image's CMD or the service's `command`, and with
//! exactly the environment the image and the file give the container. Only these change:
//!
//! - host names: a compose service name (`redis`, `gateway`) becomes 127.0.0.1;
//! - listen ports: each becomes a free port on 127.0.0.1 (two replicas cannot share one),
//!   after checking that it is the port the file publishes or exposes for the service;
//!   the admin listeners (`ADMIN_LISTEN_ADDR`: the gateway's, and the producer's when set)
//!   get a free port too;
//! - secrets: `/run/secrets/NAME` becomes the file the top-level `secrets:` names, in a
//!   temp dir filled by `deploy/make-secrets.sh` (as a user would run it), after checking
//!   that the service mounts that secret;
//! - `${NAME:-default}` becomes its default, as when NAME is not set on the host.
//!
//! nginx runs `deploy/nginx.conf` changed the same way. Its `set $gateways gateway:8080;`
//! (the name nginx resolves through Docker's DNS) names instead an `upstream` block added
//! to `http`, with one `server 127.0.0.1:PORT;` per local gateway: there is no name to
//! resolve here. Its pid and temp files go to a temp dir (`-g "pid ..."`, temp paths added
//! to `http`), so that it needs no system directory. (scripts/test-deploy runs the file
//! unchanged, in Docker.)
//!
//! The other tests read the files only: that the compose file and the Kubernetes manifests
//! set no variable a service would ignore, and that their timeouts fit together.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use streamgate::config::ServiceConfig as _;

use serde::Deserialize;
use serde_yaml_ng::Value;
use streamgate::config::{Setting, parse_duration};
use streamgate_tests::binaries::workspace_binary;
use streamgate_tests::redis_server::RedisServer;
use streamgate_tests::rig::free_port;
use streamgate_tests::sse_client::connect;
use tempfile::TempDir;

/// How long a process may take to start answering (the first build of a binary is not in it).
const START_WAIT: Duration = Duration::from_secs(30);
/// How long a published event may take to arrive.
const EVENT_WAIT: Duration = Duration::from_secs(10);
/// How long nginx may take to stop its workers and exit on SIGTERM.
const NGINX_STOP_WAIT: Duration = Duration::from_secs(5);

const COMPOSE_FILE: &str = "deploy/docker-compose.yml";
const NGINX_CONF: &str = "deploy/nginx.conf";
const HEALTHCHECK: &str = "deploy/healthcheck.sh";
const K8S_DIR: &str = "deploy/k8s";

/// Where the images install the binaries (`deploy/Dockerfile`).
pub(crate) const IMAGE_BIN_DIR: &str = "/usr/local/bin/";

/// The services with settings of their own, and those settings.
const SERVICE_SETTINGS: [(&str, &[Setting]); 2] =
    [("gateway", gateway::settings::SETTINGS), ("producer", producer::settings::SETTINGS)];

#[tokio::test]
async fn compose_services_deliver_a_published_event_through_nginx() {
    let compose = Compose::load();
    let logs = tempfile::tempdir().unwrap();
    let secrets = Secrets::make(&compose);
    let (redis, redis_port_in_file) = start_redis(&compose.service("redis"), &secrets);

    let gateway = compose.container("gateway");
    let gateway_port_in_file = gateway.listen_port_in_file();
    let gateways: Vec<ServiceProcess> = (1..=2)
        .map(|replica| {
            gateway.start(&format!("gateway-{replica}"), &redis, redis_port_in_file, &secrets, logs.path())
        })
        .collect();
    let producer =
        compose.container("producer").start("producer", &redis, redis_port_in_file, &secrets, logs.path());
    for service in gateways.iter().chain([&producer]) {
        service.wait_until_ready().await;
        assert_healthcheck_passes(service);
    }

    let heartbeat = gateway.environment.get("HEARTBEAT_INTERVAL").expect("the gateway's HEARTBEAT_INTERVAL");
    let heartbeat = parse_duration(heartbeat).expect("HEARTBEAT_INTERVAL is a duration");
    let gateway_ports: Vec<u16> = gateways.iter().map(|g| g.port).collect();
    let lb = Nginx::start(&compose.service("lb"), gateway_port_in_file, &gateway_ports, heartbeat);
    let admin = reqwest::get(lb.url("/admin/connections")).await.unwrap();
    assert_eq!(admin.status(), 404, "the admin endpoint is not public");

    // Round robin: the first two requests through nginx go to the two gateways.
    let topic = "deploy-smoke";
    let mut first = connect(&lb.url(&format!("/events?topic={topic}")), None).await;
    let mut second = connect(&lb.url(&format!("/events?topic={topic}")), None).await;
    assert_eq!((first.status.as_u16(), second.status.as_u16()), (200, 200));
    let instance = |headers: &reqwest::header::HeaderMap| headers["x-streamgate-instance"].clone();
    assert_ne!(
        instance(&first.headers),
        instance(&second.headers),
        "two replicas with the same configuration are two instances, both behind nginx"
    );

    let token = secrets.read("/run/secrets/publish-token");
    let published = streamgate_tests::publish::over_http(
        &producer.url(""),
        Some(token.trim_end()),
        &serde_json::json!({"topic": topic, "data": "hello"}),
    )
    .await;
    let id = published["results"][0]["id"].as_str().expect("an id").to_owned();
    for stream in [&mut first, &mut second] {
        let event = stream.next_event(EVENT_WAIT).await.expect("the published event");
        assert_eq!((event.data.as_str(), event.id.as_str()), ("hello", id.as_str()));
    }
}

#[test]
fn compose_gives_each_service_only_settings_it_reads() {
    let compose = Compose::load();
    for (name, settings) in SERVICE_SETTINGS {
        let unknown = unknown_names(compose.container(name).environment.keys(), settings);
        assert!(unknown.is_empty(), "{COMPOSE_FILE}: {name} ignores {unknown:?}");
    }
}

#[test]
fn compose_janitor_sweeps_the_producers_redis_prefix_and_retention() {
    let compose = Compose::load();
    let producer = compose.container("producer").environment;
    for name in ["janitor", "janitor-once"] {
        let janitor = compose.container(name);
        let looping = janitor.command.first().map(String::as_str) == Some("--interval");
        assert_eq!(looping, name == "janitor", "{name} runs {:?}", janitor.command);
        for (setting, value) in &janitor.environment {
            // Each service is its own Redis user, with its own password file.
            let (value, producers) = match setting.as_str() {
                "REDIS_PASSWORD_FILE" => continue,
                "REDIS_URL" => (without_user(value), producer.get(setting).map(|url| without_user(url))),
                _ => (value.clone(), producer.get(setting).cloned()),
            };
            assert_eq!(Some(value), producers, "{name}'s {setting} differs from the producer's");
        }
        for setting in ["REDIS_URL", "KEY_PREFIX", "HISTORY_MAX_LEN", "HISTORY_MAX_AGE"] {
            assert!(janitor.environment.contains_key(setting), "{name} has no {setting}");
        }
        let unknown = unknown_names(janitor.environment.keys(), janitor::settings::SETTINGS);
        assert!(unknown.is_empty(), "{COMPOSE_FILE}: {name} ignores {unknown:?}");
    }
}

/// `redis://user@host...` without `user@`.
fn without_user(url: &str) -> String {
    match url.strip_prefix("redis://").and_then(|rest| rest.split_once('@')) {
        Some((_, host)) => format!("redis://{host}"),
        None => url.to_owned(),
    }
}

#[test]
fn compose_services_are_their_own_redis_users_with_only_their_own_secrets() {
    let compose = Compose::load();
    for name in ["gateway", "producer", "janitor", "janitor-once"] {
        let container = compose.container(name);
        let user = name.trim_end_matches("-once");
        let url = &container.environment["REDIS_URL"];
        assert!(url.starts_with(&format!("redis://{user}@")), "{name}: REDIS_URL={url}");
        let files: BTreeSet<String> = container
            .environment
            .iter()
            .filter(|(setting, _)| setting.ends_with("_FILE"))
            .map(|(_, path)| path.strip_prefix("/run/secrets/").expect("a secret").to_owned())
            .collect();
        let mounted: BTreeSet<String> = compose.service(name).secrets.into_iter().collect();
        assert_eq!(files, mounted, "{name} mounts exactly the secrets it reads");
        assert!(files.contains(&format!("redis-{user}-password")), "{name}: {files:?}");
    }
    assert_eq!(compose.service("redis").secrets, ["redis-users-acl"]);
}

#[test]
fn kubernetes_manifests_give_each_service_only_settings_it_reads() {
    let documents = kubernetes_documents();
    for (name, settings) in SERVICE_SETTINGS {
        let own: Vec<String> = pod_container(&documents, name)["env"]
            .as_sequence()
            .expect("an env list")
            .iter()
            .map(|variable| variable["name"].as_str().unwrap().to_owned())
            .collect();
        let unknown = unknown_names(own.iter(), settings);
        assert!(unknown.is_empty(), "{K8S_DIR}: the {name} Deployment sets {unknown:?}, which it ignores");
    }
    let shared: Vec<String> = find_kind(&documents, "ConfigMap", "streamgate")["data"]
        .as_mapping()
        .expect("ConfigMap data")
        .keys()
        .map(|key| key.as_str().unwrap().to_owned())
        .collect();
    let all_settings: Vec<Setting> =
        SERVICE_SETTINGS.iter().flat_map(|(_, settings)| settings.to_vec()).collect();
    let unknown = unknown_names(shared.iter(), &all_settings);
    assert!(unknown.is_empty(), "{K8S_DIR}: the ConfigMap sets {unknown:?}, which no service reads");
}

#[test]
fn kubernetes_gateway_is_killed_only_after_prestop_and_drain() {
    let documents = kubernetes_documents();
    let grace = find_kind(&documents, "Deployment", "gateway")["spec"]["template"]["spec"]
        ["terminationGracePeriodSeconds"]
        .as_u64()
        .map(Duration::from_secs)
        .expect("a termination grace period");
    let container = pod_container(&documents, "gateway");
    let pre_stop = container["lifecycle"]["preStop"]["exec"]["command"].as_sequence().expect("a preStop");
    let pre_stop = match pre_stop.as_slice() {
        [sleep, seconds] if sleep == "sleep" => {
            Duration::from_secs(seconds.as_str().unwrap().parse().unwrap())
        }
        other => panic!("preStop is not `sleep SECONDS`: {other:?}"),
    };
    let env = |name: &str| {
        let variables = container["env"].as_sequence().expect("an env list");
        variables.iter().find(|variable| variable["name"] == name).cloned().unwrap_or_default()
    };
    let drain = parse_duration(env("DRAIN_TIMEOUT")["value"].as_str().expect("DRAIN_TIMEOUT")).unwrap();
    assert!(grace > pre_stop + drain, "grace {grace:?} <= preStop {pre_stop:?} + DRAIN_TIMEOUT {drain:?}");
    assert_eq!(env("INSTANCE_ID")["valueFrom"]["fieldRef"]["fieldPath"], "metadata.name");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
}

/// The pod spec of a workload document (Deployment, StatefulSet, CronJob).
fn pod_spec(document: &Value) -> &Value {
    match document["kind"].as_str() {
        Some("CronJob") => &document["spec"]["jobTemplate"]["spec"]["template"]["spec"],
        _ => &document["spec"]["template"]["spec"],
    }
}

#[test]
fn kubernetes_pods_are_hardened_and_take_secrets_from_required_secrets() {
    let documents = kubernetes_documents();
    let workloads: Vec<&Value> = documents
        .iter()
        .filter(|d| ["Deployment", "StatefulSet", "CronJob"].contains(&d["kind"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(workloads.len(), 4, "gateway, producer, janitor, redis");
    for workload in workloads {
        let name = workload["metadata"]["name"].as_str().unwrap();
        let spec = pod_spec(workload);
        assert_eq!(spec["automountServiceAccountToken"], false, "{name}");
        assert_eq!(spec["securityContext"]["seccompProfile"]["type"], "RuntimeDefault", "{name}");
        let containers = spec["containers"].as_sequence().unwrap().iter();
        for container in containers.chain(spec["initContainers"].as_sequence().into_iter().flatten()) {
            let limits = &container["resources"]["limits"];
            assert!(limits["memory"].is_string() && !limits["cpu"].is_null(), "{name}: limits {limits:?}");
            assert_eq!(container["securityContext"]["allowPrivilegeEscalation"], false, "{name}");
            // Secrets come from Secrets, as files: never a ConfigMap, never optional.
            for variable in container["env"].as_sequence().into_iter().flatten() {
                let variable_name = variable["name"].as_str().unwrap();
                assert!(
                    variable["valueFrom"]["secretKeyRef"].is_null(),
                    "{name}: {variable_name} from the environment"
                );
                assert!(!variable_name.contains("TOKEN") || variable_name.ends_with("_FILE"), "{name}");
            }
        }
        for volume in spec["volumes"].as_sequence().into_iter().flatten() {
            assert_ne!(volume["secret"]["optional"], true, "{name}: secret volumes are required");
        }
    }
    let config_map = &find_kind(&documents, "ConfigMap", "streamgate")["data"];
    assert!(config_map.get("REDIS_URL").is_none() && config_map.get("PUBLISH_TOKEN").is_none());
    let budget = find_kind(&documents, "PodDisruptionBudget", "gateway");
    assert_eq!(budget["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"], "gateway");
}

#[test]
fn kubernetes_services_use_their_own_redis_users_and_redis_only_admits_them() {
    let documents = kubernetes_documents();
    for (kind, name) in [("Deployment", "gateway"), ("Deployment", "producer"), ("CronJob", "janitor")] {
        let container = &pod_spec(find_kind(&documents, kind, name))["containers"][0];
        let env = container["env"].as_sequence().unwrap();
        let value = |setting: &str| {
            env.iter().find(|v| v["name"] == setting).and_then(|v| v["value"].as_str()).unwrap_or_default()
        };
        assert!(value("REDIS_URL").starts_with(&format!("redis://{name}@")), "{name}");
        assert!(value("REDIS_PASSWORD_FILE").starts_with("/run/secrets/"), "{name}");
        let volumes = pod_spec(find_kind(&documents, kind, name))["volumes"].as_sequence().unwrap();
        let keys: Vec<&str> = volumes
            .iter()
            .filter(|v| v["secret"]["secretName"] == "streamgate-redis")
            .flat_map(|v| v["secret"]["items"].as_sequence().unwrap())
            .map(|item| item["key"].as_str().unwrap())
            .collect();
        assert_eq!(keys, [name], "{name} mounts only its own Redis password");
    }
    let redis = find_kind(&documents, "NetworkPolicy", "redis");
    let sources = redis["spec"]["ingress"][0]["from"].as_sequence().unwrap();
    let components = &sources[0]["podSelector"]["matchExpressions"][1];
    assert_eq!(components["key"], "app.kubernetes.io/component");
    assert_eq!(components["values"].as_sequence().unwrap().len(), 3);
    let deny = find_kind(&documents, "NetworkPolicy", "streamgate-deny-ingress");
    assert!(deny["spec"]["ingress"].is_null(), "the base policy admits nothing");
    // The dev Redis renders the same ACL template with the same script as compose.
    let acl = &find_kind(&documents, "ConfigMap", "redis-acl")["data"];
    assert_eq!(acl["users.acl.in"].as_str(), Some(read_repo_file("deploy/redis/users.acl.in").as_str()));
    assert_eq!(acl["render-acl.sh"].as_str(), Some(read_repo_file("deploy/redis/render-acl.sh").as_str()));
    let args = pod_spec(find_kind(&documents, "StatefulSet", "redis"))["containers"][0]["args"].clone();
    let args: Vec<String> = serde_yaml_ng::from_value(args).unwrap();
    for (flag, value) in [("--aclfile", "/acl/users.acl"), ("--maxmemory-policy", "noeviction")] {
        let at = args.iter().position(|a| a == flag).unwrap_or_else(|| panic!("no {flag}"));
        assert_eq!(args[at + 1], value);
    }
    let maxmemory = args.iter().position(|a| a == "--maxmemory").expect("a maxmemory");
    assert_ne!(args[maxmemory + 1], "0");
}

#[test]
fn kustomization_lists_every_manifest() {
    let text = read_repo_file(&format!("{K8S_DIR}/kustomization.yaml"));
    let kustomization: Value = serde_yaml_ng::from_str(&text).expect("kustomization.yaml is YAML");
    let listed: BTreeSet<String> = kustomization["resources"]
        .as_sequence()
        .expect("a resources list")
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(listed, kubernetes_manifests().into_iter().collect::<BTreeSet<_>>());
}

// --- The compose file and the image ------------------------------------------------------

/// The parts of `deploy/docker-compose.yml` the test reads.
#[derive(Debug, Deserialize)]
struct Compose {
    services: BTreeMap<String, Service>,
    #[serde(default)]
    secrets: BTreeMap<String, SecretSource>,
}

/// One compose service.
#[derive(Debug, Clone, Deserialize)]
struct Service {
    build: Option<Build>,
    command: Option<Vec<String>>,
    #[serde(default)]
    environment: BTreeMap<String, Value>,
    #[serde(default)]
    ports: Vec<String>,
    #[serde(default)]
    expose: Vec<String>,
    #[serde(default)]
    secrets: Vec<String>,
    #[serde(default)]
    volumes: Vec<String>,
}

/// A top-level secret: the file it is made from, relative to the compose file.
#[derive(Debug, Clone, Deserialize)]
struct SecretSource {
    file: String,
}

/// The compose file's secrets, made by `deploy/make-secrets.sh` in a temp dir.
struct Secrets {
    dir: TempDir,
    sources: BTreeMap<String, SecretSource>,
}

impl Secrets {
    fn make(compose: &Compose) -> Secrets {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("sh")
            .arg(repo_file("deploy/make-secrets.sh"))
            .arg(dir.path().join("secrets"))
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "deploy/make-secrets.sh failed");
        Secrets { dir, sources: compose.secrets.clone() }
    }

    /// The file a container path `/run/secrets/NAME` is, if `service` mounts NAME.
    fn host_path(&self, service: &Service, name: &str, path: &str) -> Option<PathBuf> {
        let secret = path.strip_prefix("/run/secrets/")?;
        assert!(
            service.secrets.iter().any(|s| s == secret),
            "{name} reads {path} but does not mount {secret}"
        );
        let source = self.sources.get(secret).unwrap_or_else(|| panic!("no top-level secret {secret}"));
        let file = interpolate(&source.file);
        let file = file.strip_prefix("./secrets/").expect("secrets live in deploy/secrets/ by default");
        Some(self.dir.path().join("secrets").join(file))
    }

    fn read(&self, path: &str) -> String {
        let secret = path.strip_prefix("/run/secrets/").unwrap();
        let file = interpolate(&self.sources[secret].file).strip_prefix("./secrets/").unwrap().to_owned();
        fs::read_to_string(self.dir.path().join("secrets").join(file)).unwrap()
    }
}

/// A service's `build`.
#[derive(Debug, Clone, Deserialize)]
struct Build {
    /// Relative to the build context, which is the repository root.
    dockerfile: String,
    target: String,
}

impl Compose {
    fn load() -> Compose {
        serde_yaml_ng::from_str(&read_repo_file(COMPOSE_FILE)).expect("the compose file parses")
    }

    fn service(&self, name: &str) -> Service {
        self.services.get(name).unwrap_or_else(|| panic!("{COMPOSE_FILE} has no service {name}")).clone()
    }

    /// What the container of service `name` runs: the image's ENTRYPOINT with the service's
    /// `command` (else the image's CMD), and the image's ENV overridden by `environment`.
    fn container(&self, name: &str) -> Container {
        let service = self.service(name);
        let build =
            service.build.clone().unwrap_or_else(|| panic!("{name} is not built from the Dockerfile"));
        let image = ImageConfig::of(&read_repo_file(&build.dockerfile), &build.target);
        let [binary] = image.entrypoint.as_slice() else {
            panic!("{name}: the ENTRYPOINT is not one binary: {:?}", image.entrypoint)
        };
        let binary = binary.strip_prefix(IMAGE_BIN_DIR).expect("the binary is in /usr/local/bin").to_owned();
        let mut environment = image.env;
        environment.extend(service.environment.iter().map(|(k, v)| (k.clone(), interpolate(&scalar(v)))));
        Container {
            binary,
            command: service.command.clone().unwrap_or(image.cmd),
            environment,
            container_ports: service.container_ports(),
            service,
        }
    }
}

impl Service {
    /// The container ports the service publishes (`ports`) or exposes (`expose`).
    fn container_ports(&self) -> Vec<u16> {
        let port =
            |text: &str| text.rsplit(':').next().unwrap().trim_end_matches("/tcp").parse::<u16>().unwrap();
        self.ports.iter().chain(&self.expose).map(|text| port(text)).collect()
    }
}

/// An environment value as the container sees it (compose allows numbers and booleans).
fn scalar(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Number(number) => number.to_string(),
        Value::Bool(flag) => flag.to_string(),
        other => panic!("not a plain environment value: {other:?}"),
    }
}

/// Compose's `${NAME:-default}`, as when NAME is not set on the host: the default.
fn interpolate(text: &str) -> String {
    let Some(start) = text.find('$') else { return text.to_owned() };
    let (before, rest) = text.split_at(start);
    let (reference, after) = rest[2..].split_once('}').expect("only ${NAME:-default} is used");
    let (_name, default) = reference.split_once(":-").expect("only ${NAME:-default} is used");
    format!("{before}{default}{}", interpolate(after))
}

/// What an image built from one Dockerfile target runs.
#[derive(Debug, Clone, Default)]
pub(crate) struct ImageConfig {
    pub(crate) entrypoint: Vec<String>,
    pub(crate) cmd: Vec<String>,
    pub(crate) env: BTreeMap<String, String>,
}

impl ImageConfig {
    /// Follows the stages of `dockerfile` (`FROM stage AS name` inherits) up to `target`.
    /// Understands the forms `deploy/Dockerfile` uses: `ENV NAME=value`, and exec-form
    /// (JSON) `ENTRYPOINT` and `CMD`.
    pub(crate) fn of(dockerfile: &str, target: &str) -> ImageConfig {
        let mut stages: BTreeMap<String, ImageConfig> = BTreeMap::new();
        let mut current: Option<(String, ImageConfig)> = None;
        for line in dockerfile_instructions(dockerfile) {
            let (instruction, arguments) = line.split_once(' ').unwrap_or((&line, ""));
            let json = || serde_json::from_str::<Vec<String>>(arguments).expect("exec (JSON) form");
            match (instruction.to_ascii_uppercase().as_str(), current.as_mut()) {
                ("FROM", _) => {
                    stages.extend(current.take());
                    let words: Vec<&str> = arguments.split_whitespace().collect();
                    // An image from a registry (rust, debian) sets nothing the services read.
                    let base = stages.get(words[0]).cloned().unwrap_or_default();
                    current = Some((words.last().unwrap().to_string(), base));
                }
                ("ENV", Some((_, image))) => {
                    let (name, value) = arguments.split_once('=').expect("ENV NAME=value");
                    image.env.insert(name.to_owned(), value.to_owned());
                }
                // Docker's rule: a new ENTRYPOINT drops the CMD inherited with the old one.
                ("ENTRYPOINT", Some((_, image))) => (image.entrypoint, image.cmd) = (json(), Vec::new()),
                ("CMD", Some((_, image))) => image.cmd = json(),
                _ => {}
            }
        }
        stages.extend(current);
        stages.remove(target).unwrap_or_else(|| panic!("the Dockerfile has no stage {target}"))
    }
}

/// The Dockerfile's instructions, continuation lines joined, comments dropped.
fn dockerfile_instructions(dockerfile: &str) -> Vec<String> {
    let mut instructions = Vec::new();
    let mut pending = String::new();
    for line in dockerfile.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        match line.strip_suffix('\\') {
            Some(part) => pending.push_str(part),
            None => instructions.push(std::mem::take(&mut pending) + line),
        }
    }
    instructions
}

/// A service's container, as a local process would run it.
#[derive(Debug, Clone)]
struct Container {
    /// The workspace binary (`gateway`, `producer`, `janitor`).
    binary: String,
    command: Vec<String>,
    environment: BTreeMap<String, String>,
    container_ports: Vec<u16>,
    service: Service,
}

impl Container {
    /// The port of LISTEN_ADDR, which must be one the file publishes or exposes.
    fn listen_port_in_file(&self) -> u16 {
        let address: SocketAddr = self.environment["LISTEN_ADDR"].parse().expect("LISTEN_ADDR is an address");
        assert!(
            self.container_ports.contains(&address.port()),
            "{} listens on {address}, but the file publishes or exposes only {:?}",
            self.binary,
            self.container_ports
        );
        address.port()
    }

    /// Starts the binary with this environment and nothing else, but for `redis:PORT` in
    /// REDIS_URL, which becomes the test's Redis, LISTEN_ADDR, a free port on 127.0.0.1,
    /// and secret paths, the files `secrets` made.
    fn start(
        &self,
        name: &str,
        redis: &RedisServer,
        redis_port_in_file: u16,
        secrets: &Secrets,
        logs: &Path,
    ) -> ServiceProcess {
        self.listen_port_in_file();
        let mut environment = self.environment.clone();
        for value in environment.values_mut() {
            if let Some(path) = secrets.host_path(&self.service, name, value) {
                *value = path.to_str().unwrap().to_owned();
            }
        }
        let redis_in_file = format!("redis:{redis_port_in_file}");
        let redis_url = &environment["REDIS_URL"];
        let (user, rest) = redis_url
            .strip_prefix("redis://")
            .and_then(|rest| rest.split_once('@'))
            .and_then(|(user, rest)| Some((user, rest.strip_prefix(&redis_in_file)?)))
            .unwrap_or_else(|| {
                panic!("{name}: REDIS_URL={redis_url} does not name a user at the redis service ({redis_in_file})")
            });
        environment.insert("REDIS_URL".into(), format!("redis://{user}@127.0.0.1:{}{rest}", redis.port()));
        if self.binary == "producer" {
            // As the file configures it (on 0.0.0.0), the producer would start: it has a token.
            let pairs: Vec<(&str, &str)> =
                environment.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let config =
                producer::settings::ProducerConfig::with_overrides(&pairs).expect("the producer's settings");
            assert!(config.check_exposure().is_ok(), "{name} would refuse to start: no authentication");
        }
        let port = free_port();
        environment.insert("LISTEN_ADDR".into(), format!("127.0.0.1:{port}"));
        if self.binary == "gateway" || environment.contains_key("ADMIN_LISTEN_ADDR") {
            environment.insert("ADMIN_LISTEN_ADDR".into(), format!("127.0.0.1:{}", free_port()));
        }
        ServiceProcess::spawn(name, &self.binary, &self.command, environment, port, logs)
    }
}

/// Starts Redis with the redis service's `command` (`redis-server --NAME VALUE ...`) on
/// a free port, secrets mapped to `secrets`; returns it and the port the file's Redis
/// listens on. The harness connects as the ACL file's `admin` user.
fn start_redis(service: &Service, secrets: &Secrets) -> (RedisServer, u16) {
    let command = service.command.clone().expect("the redis service has a command");
    let admin_password = fs::read_to_string(secrets.dir.path().join("secrets/redis-admin-password")).unwrap();
    start_redis_command(
        &command,
        |value| secrets.host_path(service, "redis", value).map(|path| path.to_str().unwrap().to_owned()),
        admin_password.trim_end(),
    )
}

/// Starts Redis as `command` (`redis-server --NAME VALUE ...`) says, on a free port, each
/// value replaced by `local(value)` when that is some (a file the deployment mounts);
/// the harness connects as the ACL user `admin` with `admin_password`. Returns the server
/// and the port `command` would listen on.
pub(crate) fn start_redis_command(
    command: &[String],
    local: impl Fn(&str) -> Option<String>,
    admin_password: &str,
) -> (RedisServer, u16) {
    let ("redis-server", options) = command.split_first().map(|(p, o)| (p.as_str(), o)).unwrap() else {
        panic!("the redis service does not run redis-server: {command:?}")
    };
    let mut builder = RedisServer::builder();
    for pair in options.chunks(2) {
        let [name, value] = pair else {
            panic!("redis-server options are not --NAME VALUE pairs: {options:?}")
        };
        let name = name.strip_prefix("--").expect("--NAME");
        // These are for the test's server to choose; the file has no reason to set them.
        assert!(!["port", "bind", "dir"].contains(&name), "the redis service sets --{name}");
        builder = builder.config(name, local(value).unwrap_or_else(|| value.clone()));
    }
    let redis = builder.auth("admin", admin_password).start();
    // The options reached the server: the ones the services depend on are in effect.
    let mut connection = redis.redis_client().get_connection().unwrap();
    let policy: Vec<String> =
        redis::cmd("CONFIG").arg("GET").arg("maxmemory-policy").query(&mut connection).unwrap();
    let aof: Vec<String> = redis::cmd("CONFIG").arg("GET").arg("appendonly").query(&mut connection).unwrap();
    assert_eq!((policy[1].as_str(), aof[1].as_str()), ("noeviction", "yes"));
    let maxmemory: Vec<String> =
        redis::cmd("CONFIG").arg("GET").arg("maxmemory").query(&mut connection).unwrap();
    assert_ne!(maxmemory[1], "0", "the compose Redis has a memory limit");
    (redis, REDIS_DEFAULT_PORT)
}

/// The port the file's Redis listens on: it sets no `--port` (checked above).
pub(crate) const REDIS_DEFAULT_PORT: u16 = 6379;

/// A service binary started from a deployment file; killed when dropped.
pub(crate) struct ServiceProcess {
    name: String,
    child: Child,
    port: u16,
    environment: BTreeMap<String, String>,
    log: PathBuf,
}

impl ServiceProcess {
    /// Starts workspace binary `binary` with `args` and exactly `environment`, which
    /// listens on 127.0.0.1:`port`; its stderr goes to `logs`/`name`.log.
    pub(crate) fn spawn(
        name: &str,
        binary: &str,
        args: &[String],
        environment: BTreeMap<String, String>,
        port: u16,
        logs: &Path,
    ) -> ServiceProcess {
        let log = logs.join(format!("{name}.log"));
        let mut command = Command::new(workspace_binary(binary));
        command.args(args).env_clear().envs(&environment).stdin(Stdio::null()).stdout(Stdio::null());
        if std::env::var_os("TEST_LOG").is_none() {
            command.stderr(fs::File::create(&log).unwrap());
        }
        let child = command.spawn().unwrap_or_else(|error| panic!("cannot start {name}: {error}"));
        ServiceProcess { name: name.to_owned(), child, port, environment, log }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Waits until `/readyz` answers 200; fails with the service's log if it exits first.
    pub(crate) async fn wait_until_ready(&self) {
        let deadline = Instant::now() + START_WAIT;
        loop {
            if let Ok(response) = reqwest::get(self.url("/readyz")).await
                && response.status() == 200
            {
                return;
            }
            let log = || fs::read_to_string(&self.log).unwrap_or_default();
            assert!(Instant::now() < deadline, "{} is not ready after {START_WAIT:?}:\n{}", self.name, log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The images' HEALTHCHECK script, run with the service's LISTEN_ADDR, passes; and fails
/// where nothing listens.
fn assert_healthcheck_passes(service: &ServiceProcess) {
    let run = |listen_addr: &str| {
        Command::new("bash")
            .arg(repo_file(HEALTHCHECK))
            .env_clear()
            .env("LISTEN_ADDR", listen_addr)
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    };
    assert!(run(&service.environment["LISTEN_ADDR"]), "{HEALTHCHECK} fails for {}", service.name);
    assert!(!run(&format!("0.0.0.0:{}", free_port())), "{HEALTHCHECK} passes where nothing listens");
}

// --- nginx ---------------------------------------------------------------------------------

/// nginx running `deploy/nginx.conf`, changed only in the gateways it proxies to, its
/// listen port and where it keeps its pid and temp files.
struct Nginx {
    child: Child,
    port: u16,
    dir: TempDir,
}

/// Where the lb service mounts the TLS certificate and key (deploy/docker-compose.yml).
const NGINX_TLS_DIR: &str = "/etc/nginx/tls";

/// The `upstream` block that stands for the `gateway` service's replicas; a `proxy_pass`
/// whose variable holds a name without a port takes the block of that name, if any.
const LOCAL_UPSTREAM: &str = "local_gateways";

/// The temp-file directives nginx would otherwise point at system directories.
const NGINX_TEMP_PATHS: [&str; 5] =
    ["client_body_temp_path", "proxy_temp_path", "fastcgi_temp_path", "uwsgi_temp_path", "scgi_temp_path"];

impl Nginx {
    /// Starts nginx in front of the local gateways, after checking that the file's upstream
    /// is the `gateway` service on `gateway_port_in_file`, that it listens on a port the
    /// `lb` service publishes, and that its read timeout is longer than the heartbeat.
    fn start(lb: &Service, gateway_port_in_file: u16, gateway_ports: &[u16], heartbeat: Duration) -> Nginx {
        let conf = read_repo_file(NGINX_CONF);
        let read_timeout = conf
            .lines()
            .find_map(|line| line.trim().strip_prefix("proxy_read_timeout "))
            .and_then(|value| parse_duration(value.trim_end_matches(';')))
            .expect("nginx.conf sets proxy_read_timeout");
        assert!(read_timeout > heartbeat, "proxy_read_timeout {read_timeout:?} <= heartbeat {heartbeat:?}");

        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut adapted = String::new();
        for line in conf.lines() {
            let indent = &line[..line.len() - line.trim_start().len()];
            match line.split_whitespace().collect::<Vec<_>>().as_slice() {
                ["set", "$gateways", address] => {
                    let address = address.trim_end_matches(';');
                    assert_eq!(address, format!("gateway:{gateway_port_in_file}"), "the gateways' address");
                    adapted.push_str(&format!("{indent}set $gateways {LOCAL_UPSTREAM};\n"));
                }
                ["listen", listen] => {
                    let listen: u16 = listen.trim_end_matches(';').parse().expect("listen PORT;");
                    assert!(lb.container_ports().contains(&listen), "lb does not publish port {listen}");
                    adapted.push_str(&format!("{indent}listen 127.0.0.1:{port};\n"));
                }
                ["listen", listen, "ssl", "http2;"] => {
                    let listen: u16 = listen.parse().expect("listen PORT ssl http2;");
                    assert!(lb.container_ports().contains(&listen), "lb does not publish port {listen}");
                    adapted.push_str(&format!("{indent}listen 127.0.0.1:{} ssl http2;\n", free_port()));
                }
                [directive @ ("ssl_certificate" | "ssl_certificate_key"), path] => {
                    // The files the lb service mounts: here, a certificate made for the test.
                    let file =
                        path.trim_end_matches(';').strip_prefix(NGINX_TLS_DIR).expect("in the TLS mount");
                    assert!(
                        lb.volumes.iter().any(|volume| volume.ends_with(&format!(":{NGINX_TLS_DIR}:ro"))),
                        "lb does not mount {NGINX_TLS_DIR}: {:?}",
                        lb.volumes
                    );
                    adapted.push_str(&format!("{indent}{directive} {}/{file};\n", dir.path().display()));
                }
                ["http", "{"] => {
                    adapted.push_str(&format!("{line}\n"));
                    for directive in NGINX_TEMP_PATHS {
                        adapted.push_str(&format!("    {directive} {}/{directive};\n", dir.path().display()));
                    }
                    adapted.push_str(&format!("    upstream {LOCAL_UPSTREAM} {{\n"));
                    // Round robin shared by the workers (`worker_processes auto`), so that
                    // two requests in a row reach two gateways whichever worker takes them.
                    adapted.push_str(&format!("        zone {LOCAL_UPSTREAM} 64k;\n"));
                    for gateway in gateway_ports {
                        adapted.push_str(&format!("        server 127.0.0.1:{gateway};\n"));
                    }
                    adapted.push_str("    }\n");
                }
                _ => adapted.push_str(&format!("{line}\n")),
            }
        }
        streamgate_tests::certificate::Certificate::self_signed(dir.path(), "tls");
        let conf_path = dir.path().join("nginx.conf");
        fs::write(&conf_path, adapted).unwrap();
        // Run as root, nginx's workers switch to `nobody`, who must reach the temp paths.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();

        let log = fs::File::create(dir.path().join("nginx.log")).unwrap();
        let child = Command::new(nginx_binary())
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf_path)
            .args(["-e", "stderr", "-g"])
            .arg(format!("daemon off; pid {}/nginx.pid;", dir.path().display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start nginx");
        let mut nginx = Nginx { child, port, dir };
        nginx.wait_until_listening();
        nginx
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn wait_until_listening(&mut self) {
        let deadline = Instant::now() + START_WAIT;
        while TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).is_err() {
            let log = || fs::read_to_string(self.dir.path().join("nginx.log")).unwrap_or_default();
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("nginx exited with {status}:\n{}", log());
            }
            assert!(Instant::now() < deadline, "nginx does not listen after {START_WAIT:?}:\n{}", log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Nginx {
    /// SIGTERM, so that the master stops its workers: SIGKILL would leave them running,
    /// orphaned, on the listening socket. SIGKILL only if it has not exited after a while.
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + NGINX_STOP_WAIT;
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `nginx` on PATH, else Debian's /usr/sbin/nginx (not on a normal user's PATH).
fn nginx_binary() -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("nginx"))
        .find(|candidate| candidate.is_file())
        .expect("nginx is not installed: run scripts/test, which installs it")
}

// --- Kubernetes ---------------------------------------------------------------------------

/// The manifests kustomize applies: every YAML file in deploy/k8s but its own.
fn kubernetes_manifests() -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(repo_file(K8S_DIR))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".yaml") && name != "kustomization.yaml")
        .collect();
    names.sort();
    names
}

/// Every document of every manifest.
pub(crate) fn kubernetes_documents() -> Vec<Value> {
    kubernetes_manifests()
        .iter()
        .flat_map(|name| {
            let text = read_repo_file(&format!("{K8S_DIR}/{name}"));
            serde_yaml_ng::Deserializer::from_str(&text)
                .map(|document| Value::deserialize(document).expect("a manifest parses"))
                .collect::<Vec<_>>()
        })
        .collect()
}

pub(crate) fn find_kind<'a>(documents: &'a [Value], kind: &str, name: &str) -> &'a Value {
    documents
        .iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in {K8S_DIR}"))
}

/// The (one) container of Deployment `name`.
fn pod_container<'a>(documents: &'a [Value], name: &str) -> &'a Value {
    &find_kind(documents, "Deployment", name)["spec"]["template"]["spec"]["containers"][0]
}

// --- Helpers ------------------------------------------------------------------------------

/// The names among `names` that are none of `settings`.
pub(crate) fn unknown_names<'a>(
    names: impl Iterator<Item = &'a String>,
    settings: &[Setting],
) -> Vec<String> {
    names.filter(|name| !settings.iter().any(|s| s.name == name.as_str())).cloned().collect()
}

pub(crate) fn repo_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(relative)
}

pub(crate) fn read_repo_file(relative: &str) -> String {
    fs::read_to_string(repo_file(relative)).unwrap_or_else(|error| panic!("cannot read {relative}: {error}"))
}
