//! The Kubernetes manifests, rendered as `kubectl apply -k deploy/k8s` renders them, give
//! every workload what its binary reads, and the binary answers where the manifests look.
//!
//! There is no cluster here, so each workload runs as a local process: the binary its
//! image's ENTRYPOINT names (`deploy/Dockerfile`, the target named by the image), with the
//! container's `args` (else the image's CMD) and exactly the environment the pod would get
//! (the image's ENV, then `envFrom` ConfigMaps, then `env`: values, the pod name for
//! `fieldRef: metadata.name`, nothing for an optional Secret that does not exist). Only
//! the Redis host (the `redis` Service) becomes the test's Redis, started with the
//! StatefulSet's own arguments, and LISTEN_ADDR's port a free one after checking that it is
//! the container port the probes and the Service name.
//!
//! The Redis Cluster overlay (`deploy/k8s-cluster`: the base as a resource, a ConfigMap
//! merged in, the development Redis deleted) is rendered the same way, its patches applied
//! as kustomize's strategic merge applies them, and every workload of it checked to read
//! the cluster's seed nodes.

use std::collections::BTreeMap;
use std::fs;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use streamgate::config::ServiceConfig as _;

use gateway::GatewayConfig;
use janitor::JanitorConfig;
use producer::settings::ProducerConfig;
use serde::Deserialize;
use serde_yaml_ng::{Mapping, Value};
use streamgate::redis::{Node, Topology};
use streamgate_tests::binaries::workspace_binary;
use streamgate_tests::redis_server::RedisServer;
use streamgate_tests::rig::free_port;
use tempfile::TempDir;

use crate::deploy_compose::{
    IMAGE_BIN_DIR, ImageConfig, REDIS_DEFAULT_PORT, ServiceProcess, read_repo_file, repo_file,
    start_redis_command,
};

const K8S_DIR: &str = "deploy/k8s";
/// The overlay that points the services at a Redis Cluster instead of the base's Redis.
const K8S_CLUSTER_DIR: &str = "deploy/k8s-cluster";
const DOCKERFILE: &str = "deploy/Dockerfile";
/// What the pod name of a Deployment's pod looks like (`fieldRef: metadata.name`).
const POD_NAME_SUFFIX: &str = "-5d8c7b9f4-x2x7q";

#[tokio::test]
async fn kubernetes_workloads_answer_their_probes_on_the_ports_their_services_name() {
    let documents = rendered_manifests(K8S_DIR);
    let logs = tempfile::tempdir().unwrap();
    let secrets = SecretValues::make();

    // Redis as its StatefulSet runs it: the init container renders the ACL file into the
    // shared volume, then redis-server starts with the container's arguments.
    let redis = workload(&documents, "StatefulSet", "redis");
    assert_eq!(redis.container_port("redis"), REDIS_DEFAULT_PORT, "the redis container port");
    let redis_files = PodFiles::materialize(&documents, &redis, &secrets);
    redis_files.run_init_containers(&redis);
    let redis_args = string_list(&redis.container["args"]);
    let admin_password = secrets.get("streamgate-redis", "admin");
    let (redis_server, _) =
        start_redis_command(&redis_args, |value| redis_files.local(&redis.container, value), &admin_password);

    for name in ["gateway", "producer"] {
        let deployment = workload(&documents, "Deployment", name);
        let files = PodFiles::materialize(&documents, &deployment, &secrets);
        let run = deployment.run(&documents, &files);
        let listen: SocketAddr = run.environment["LISTEN_ADDR"].parse().expect("LISTEN_ADDR is an address");
        assert_eq!(listen.port(), deployment.container_port("http"), "{name} listens on its `http` port");

        let mut environment = run.environment.clone();
        environment
            .insert("REDIS_URL".into(), redis_server_url(name, &environment["REDIS_URL"], &redis_server));
        let port = free_port();
        environment.insert("LISTEN_ADDR".into(), format!("127.0.0.1:{port}"));
        let process = ServiceProcess::spawn(name, &run.binary, &run.args, environment, port, logs.path());
        process.wait_until_ready().await;

        for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
            let probe_spec = &deployment.container[probe];
            if probe_spec.is_null() {
                continue;
            }
            let http = &probe_spec["httpGet"];
            assert_eq!(deployment.port_number(&http["port"]), listen.port(), "{name}'s {probe} port");
            let path = http["path"].as_str().expect("an httpGet path");
            let status = reqwest::get(process.url(path)).await.unwrap().status();
            assert_eq!(status, 200, "{name}'s {probe} GET {path}");
        }
    }

    // Every Service selects one workload's pods and targets one of its container ports.
    for service in documents.iter().filter(|d| d["kind"] == "Service") {
        let name = service["metadata"]["name"].as_str().unwrap();
        let selector = service["spec"]["selector"].as_mapping().expect("a selector");
        let selected: Vec<Workload> = workloads(&documents)
            .into_iter()
            .filter(|w| selector.iter().all(|(k, v)| w.pod_labels.get(k) == Some(v)))
            .collect();
        let [target] = selected.as_slice() else {
            panic!("Service {name} selects {} workloads", selected.len())
        };
        for port in service["spec"]["ports"].as_sequence().expect("Service ports") {
            target.port_number(&port["targetPort"]);
        }
    }

    // The janitor's CronJob: one sweep against the same Redis, as its own ACL user, exit 0,
    // one JSON line.
    let janitor = workload(&documents, "CronJob", "janitor");
    let files = PodFiles::materialize(&documents, &janitor, &secrets);
    let run = janitor.run(&documents, &files);
    let mut environment = run.environment.clone();
    environment
        .insert("REDIS_URL".into(), redis_server_url("janitor", &environment["REDIS_URL"], &redis_server));
    let output = Command::new(workspace_binary(&run.binary))
        .args(&run.args)
        .env_clear()
        .envs(&environment)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(output.status.success(), "the janitor job fails: {}", String::from_utf8_lossy(&output.stderr));
    let sweep: serde_json::Value = serde_json::from_slice(&output.stdout).expect("one JSON line");
    assert!(sweep["dead_instances"].is_u64(), "{sweep}");
}

#[test]
fn the_cluster_overlay_points_every_workload_at_the_cluster_nodes_and_drops_the_development_redis() {
    let base = rendered_manifests(K8S_DIR);
    let overlay = rendered_manifests(K8S_CLUSTER_DIR);
    let secrets = SecretValues::make();

    let development_redis = |d: &&Value| {
        d["metadata"]["name"] == "redis" && (d["kind"] == "StatefulSet" || d["kind"] == "Service")
    };
    assert_eq!(base.iter().filter(development_redis).count(), 2, "the base runs a development Redis");
    assert_eq!(overlay.iter().filter(development_redis).count(), 0, "the overlay removes it");
    assert_eq!(overlay.len(), base.len() - 2, "the overlay keeps everything else of the base");

    for (kind, name) in [("Deployment", "gateway"), ("Deployment", "producer"), ("CronJob", "janitor")] {
        let workload = workload(&overlay, kind, name);
        let files = PodFiles::materialize(&overlay, &workload, &secrets);
        let run = workload.run(&overlay, &files);
        let seeds = run
            .environment
            .get("REDIS_CLUSTER_NODES")
            .unwrap_or_else(|| panic!("{name} has no REDIS_CLUSTER_NODES: {:?}", run.environment));
        let nodes = Node::parse_list(seeds).unwrap_or_else(|| panic!("{name}: REDIS_CLUSTER_NODES={seeds}"));
        let pods: Vec<String> = nodes.iter().map(|node| format!("{}:{}", node.host, node.port)).collect();
        assert_eq!(
            pods,
            (0..3)
                .map(|n| format!("redis-cluster-{n}.redis-cluster:{REDIS_DEFAULT_PORT}"))
                .collect::<Vec<_>>(),
            "{name}: the pods of the redis-cluster StatefulSet, through its headless Service"
        );

        // The binary reads that environment as a Redis Cluster (of the shared ConfigMap, the
        // settings it declares: it ignores the others, as it ignores the pod's other variables).
        let declared = match name {
            "gateway" => gateway::settings::SETTINGS,
            "producer" => producer::settings::SETTINGS,
            _ => janitor::settings::SETTINGS,
        };
        let settings: Vec<(&str, &str)> = run
            .environment
            .iter()
            .filter(|(key, _)| declared.iter().any(|setting| setting.name == key.as_str()))
            .map(|(key, value)| (key.as_str(), value.as_str()))
            .collect();
        let topology = match name {
            "gateway" => GatewayConfig::with_overrides(&settings).map(|config| config.common.redis_topology),
            "producer" => {
                ProducerConfig::with_overrides(&settings).map(|config| config.common.redis_topology)
            }
            _ => JanitorConfig::with_overrides(&settings).map(|config| config.common.redis_topology),
        };
        let topology = topology.unwrap_or_else(|error| panic!("{name}'s settings do not load: {error}"));
        assert_eq!(topology, Topology::Cluster { nodes }, "{name}");
    }

    validate_rendered(&overlay);
}

/// The oldest and the newest Kubernetes `scripts/test` validates the manifests for.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.30.0", "1.37.0"];

/// Validates rendered `documents` with kubernetes-validate, as `scripts/test` validates the
/// files: the tool from the virtualenv `scripts/test` installs (`$STREAMGATE_TOOLS_VENV`, by
/// default `.venv-tools` at the repository root). Without it (tests run by hand before
/// `scripts/test` ever ran) this says so on stderr and checks nothing.
fn validate_rendered(documents: &[Value]) {
    let venv = std::env::var_os("STREAMGATE_TOOLS_VENV").map_or_else(|| repo_file(".venv-tools"), Into::into);
    let tool = venv.join("bin/kubernetes-validate");
    if !tool.exists() {
        eprintln!(
            "{} is not installed (scripts/test installs it): rendered objects not validated",
            tool.display()
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<std::path::PathBuf> = documents
        .iter()
        .enumerate()
        .map(|(n, document)| {
            let file = dir.path().join(format!("{n}.yaml"));
            fs::write(&file, serde_yaml_ng::to_string(document).unwrap()).unwrap();
            file
        })
        .collect();
    for version in KUBERNETES_VERSIONS {
        let output = Command::new(&tool)
            .args(["--strict", "--quiet", "--kubernetes-version", version])
            .args(&files)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "the rendered objects do not validate for Kubernetes {version}:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// `redis://USER@redis:6379…` (the `redis` Service, the service's own ACL user) with the
/// host and port of the test's Redis instead.
fn redis_server_url(name: &str, redis_url: &str, redis: &RedisServer) -> String {
    let service = format!("redis:{REDIS_DEFAULT_PORT}");
    let (user, rest) = redis_url
        .strip_prefix("redis://")
        .and_then(|rest| rest.split_once('@'))
        .and_then(|(user, rest)| Some((user, rest.strip_prefix(&service)?)))
        .unwrap_or_else(|| panic!("{name}: REDIS_URL={redis_url} does not name a user at the redis Service"));
    assert_eq!(user, name, "{name} connects as its own Redis user");
    format!("redis://{user}@127.0.0.1:{}{rest}", redis.port())
}

// --- Secrets and volumes ------------------------------------------------------------------

/// The Secrets the manifests require but do not contain (the kustomization's header says
/// which): made as `deploy/make-secrets.sh` makes compose's, key by key.
struct SecretValues {
    values: BTreeMap<(String, String), String>,
}

impl SecretValues {
    fn make() -> SecretValues {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("sh")
            .arg(repo_file("deploy/make-secrets.sh"))
            .arg(dir.path())
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "deploy/make-secrets.sh failed");
        let read = |file: &str| fs::read_to_string(dir.path().join(file)).unwrap();
        let mut values = BTreeMap::new();
        for user in ["admin", "gateway", "producer", "janitor", "ingest"] {
            values.insert(("streamgate-redis".into(), user.into()), read(&format!("redis-{user}-password")));
        }
        values.insert(("streamgate-publish".into(), "token".into()), read("publish-token"));
        SecretValues { values }
    }

    fn get(&self, secret: &str, key: &str) -> String {
        let value = self.values.get(&(secret.to_owned(), key.to_owned()));
        value
            .unwrap_or_else(|| panic!("the manifests use Secret {secret} key {key}, which nobody makes"))
            .trim_end()
            .to_owned()
    }
}

/// A pod's volumes as local directories (ConfigMap and Secret items as files, emptyDirs
/// empty), so paths in a container's arguments and environment can be mapped to them.
struct PodFiles {
    root: TempDir,
}

impl PodFiles {
    fn materialize(documents: &[Value], workload: &Workload, secrets: &SecretValues) -> PodFiles {
        let root = tempfile::tempdir().unwrap();
        for volume in workload.pod_spec["volumes"].as_sequence().into_iter().flatten() {
            let name = volume["name"].as_str().expect("a volume name");
            let dir = root.path().join(name);
            fs::create_dir_all(&dir).unwrap();
            if let Some(config_map) = volume["configMap"]["name"].as_str() {
                let document = documents
                    .iter()
                    .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == config_map)
                    .unwrap_or_else(|| panic!("no ConfigMap {config_map}"));
                for (key, value) in document["data"].as_mapping().expect("ConfigMap data") {
                    fs::write(dir.join(key.as_str().unwrap()), value.as_str().unwrap()).unwrap();
                }
            } else if let Some(secret) = volume["secret"]["secretName"].as_str() {
                for item in volume["secret"]["items"].as_sequence().expect("Secret items") {
                    let key = item["key"].as_str().unwrap();
                    fs::write(dir.join(item["path"].as_str().unwrap()), secrets.get(secret, key) + "\n")
                        .unwrap();
                }
            } else {
                assert!(
                    !volume["emptyDir"].is_null() || !volume["persistentVolumeClaim"].is_null(),
                    "{}: volume {name}",
                    workload.name
                );
            }
        }
        PodFiles { root }
    }

    /// `value` with the mount path of one of `container`'s volumes replaced by its local
    /// directory, if it starts with one.
    fn local(&self, container: &Value, value: &str) -> Option<String> {
        container["volumeMounts"].as_sequence().into_iter().flatten().find_map(|mount| {
            let path = mount["mountPath"].as_str().unwrap();
            let rest = value.strip_prefix(path)?;
            (rest.is_empty() || rest.starts_with('/')).then(|| {
                format!("{}{rest}", self.root.path().join(mount["name"].as_str().unwrap()).display())
            })
        })
    }

    /// Runs the pod's `sh -c` init containers, their paths mapped to the volumes.
    fn run_init_containers(&self, workload: &Workload) {
        for init in workload.pod_spec["initContainers"].as_sequence().into_iter().flatten() {
            let command = string_list(&init["command"]);
            let ["sh", "-c", script] = command.iter().map(String::as_str).collect::<Vec<_>>()[..] else {
                panic!("{}: init container command {command:?} is not `sh -c SCRIPT`", workload.name)
            };
            let script = script
                .split(' ')
                .map(|word| {
                    let (prefix, path) = word.split_at(word.find('/').unwrap_or(word.len()));
                    match self.local(init, path) {
                        Some(local) if !path.is_empty() => format!("{prefix}{local}"),
                        _ => word.to_owned(),
                    }
                })
                .collect::<Vec<_>>()
                .join(" ");
            let status = Command::new("sh").arg("-c").arg(&script).status().unwrap();
            assert!(status.success(), "{}: init container {script} failed", workload.name);
        }
    }
}

// --- Rendering ---------------------------------------------------------------------------

/// The parts of `kustomization.yaml` this test renders; any other field fails the parse,
/// so a kustomization that grows (images, replacements) is rendered here too or noticed.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Kustomization {
    #[allow(dead_code)]
    api_version: String,
    #[allow(dead_code)]
    kind: String,
    #[serde(default)]
    labels: Vec<LabelSet>,
    resources: Vec<String>,
    #[serde(default)]
    patches: Vec<PatchEntry>,
}

/// One entry of `patches`: a strategic-merge patch, in a file (`path`) or inline (`patch`),
/// applied to the one resource its apiVersion, kind and name identify (no `target`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchEntry {
    path: Option<String>,
    patch: Option<String>,
}

/// One entry of `labels`: kustomize adds the pairs to every resource's metadata (and, with
/// `includeSelectors` or `includeTemplates`, to selectors and pod templates).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct LabelSet {
    pairs: BTreeMap<String, String>,
    #[serde(default)]
    include_selectors: bool,
    #[serde(default)]
    include_templates: bool,
}

/// Every document of every resource the `kustomization.yaml` in `dir` lists (a directory
/// being another kustomization, rendered first), with its labels and then its patches
/// applied.
fn rendered_manifests(dir: &str) -> Vec<Value> {
    let kustomization: Kustomization =
        serde_yaml_ng::from_str(&read_repo_file(&format!("{dir}/kustomization.yaml")))
            .expect("kustomization");
    let mut documents = Vec::new();
    for resource in &kustomization.resources {
        let path = format!("{dir}/{resource}");
        if repo_file(&path).is_dir() {
            documents.extend(rendered_manifests(&path));
            continue;
        }
        for document in serde_yaml_ng::Deserializer::from_str(&read_repo_file(&path)) {
            documents.push(Value::deserialize(document).expect("a manifest parses"));
        }
    }
    for document in &mut documents {
        for set in &kustomization.labels {
            assert!(!set.include_selectors && !set.include_templates, "render selector labels too");
            let labels = document["metadata"]
                .as_mapping_mut()
                .expect("metadata")
                .entry("labels".into())
                .or_insert_with(|| Value::Mapping(Mapping::new()));
            for (key, value) in &set.pairs {
                labels.as_mapping_mut().expect("labels").insert(key.as_str().into(), value.as_str().into());
            }
        }
    }
    for entry in &kustomization.patches {
        let (origin, text) = match (&entry.path, &entry.patch) {
            (Some(path), None) => (format!("{dir}/{path}"), read_repo_file(&format!("{dir}/{path}"))),
            (None, Some(inline)) => (format!("{dir}: inline patch"), inline.clone()),
            _ => panic!("{dir}: a patch is either `path` or `patch`: {entry:?}"),
        };
        for patch in serde_yaml_ng::Deserializer::from_str(&text) {
            let patch = Value::deserialize(patch).expect("a patch parses");
            apply_strategic_merge_patch(&mut documents, &patch, &origin);
        }
    }
    documents
}

/// Applies one strategic-merge patch as kustomize does, for the forms this test renders:
/// `$patch: delete` removes the resource; otherwise maps merge key by key and a `null`
/// value removes its key. Lists merge by their patch-merge key in kustomize; that is not
/// rendered here, so a patch containing one fails rather than render something else.
fn apply_strategic_merge_patch(documents: &mut Vec<Value>, patch: &Value, origin: &str) {
    let identity = |d: &Value| (d["apiVersion"].clone(), d["kind"].clone(), d["metadata"]["name"].clone());
    let matching: Vec<usize> = documents
        .iter()
        .enumerate()
        .filter(|(_, d)| identity(d) == identity(patch))
        .map(|(n, _)| n)
        .collect();
    let [index] = matching.as_slice() else {
        panic!("{origin}: the patch matches {} resources, not one: {:?}", matching.len(), identity(patch))
    };
    if patch["$patch"] == "delete" {
        documents.remove(*index);
        return;
    }
    merge_maps(&mut documents[*index], patch, origin);
}

fn merge_maps(target: &mut Value, patch: &Value, origin: &str) {
    let (Some(target), Some(patch)) = (target.as_mapping_mut(), patch.as_mapping()) else {
        panic!("{origin}: merging a map into something else")
    };
    for (key, value) in patch {
        let name = key.as_str().unwrap_or_default();
        assert!(!name.starts_with('$'), "{origin}: the directive {name} is not rendered here");
        assert!(
            !value.is_sequence(),
            "{origin}: {name} is a list, which kustomize merges by key: not rendered here"
        );
        match target.get_mut(key) {
            _ if value.is_null() => {
                target.remove(key);
            }
            Some(existing) if existing.is_mapping() && value.is_mapping() => {
                merge_maps(existing, value, origin)
            }
            _ => {
                target.insert(key.clone(), value.clone());
            }
        }
    }
}

// --- Workloads ----------------------------------------------------------------------------

/// A Deployment, StatefulSet or CronJob: its (one) container and its pods' labels.
#[derive(Debug, Clone)]
struct Workload {
    kind: String,
    name: String,
    container: Value,
    pod_spec: Value,
    pod_labels: Mapping,
}

/// What a workload's container runs.
struct Run {
    binary: String,
    args: Vec<String>,
    environment: BTreeMap<String, String>,
}

fn workloads(documents: &[Value]) -> Vec<Workload> {
    documents
        .iter()
        .filter_map(|document| {
            let kind = document["kind"].as_str()?;
            let pod = match kind {
                "Deployment" | "StatefulSet" => &document["spec"]["template"],
                "CronJob" => &document["spec"]["jobTemplate"]["spec"]["template"],
                _ => return None,
            };
            let containers = pod["spec"]["containers"].as_sequence().expect("containers");
            let [container] = containers.as_slice() else { panic!("one container per pod") };
            Some(Workload {
                kind: kind.to_owned(),
                name: document["metadata"]["name"].as_str().unwrap().to_owned(),
                container: container.clone(),
                pod_spec: pod["spec"].clone(),
                pod_labels: pod["metadata"]["labels"].as_mapping().cloned().unwrap_or_default(),
            })
        })
        .collect()
}

fn workload(documents: &[Value], kind: &str, name: &str) -> Workload {
    workloads(documents)
        .into_iter()
        .find(|w| w.kind == kind && w.name == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in {K8S_DIR}"))
}

impl Workload {
    /// The container port named `name`.
    fn container_port(&self, name: &str) -> u16 {
        self.port_number(&Value::from(name))
    }

    /// A probe's or Service's port: a container port's name, or a number that is one.
    fn port_number(&self, port: &Value) -> u16 {
        let ports = self.container["ports"].as_sequence().expect("container ports");
        let found = ports.iter().find(|p| match port {
            Value::String(name) => p["name"] == name.as_str(),
            number => &p["containerPort"] == number,
        });
        let found = found.unwrap_or_else(|| panic!("{}: no container port {port:?}", self.name));
        found["containerPort"].as_u64().and_then(|n| u16::try_from(n).ok()).expect("a port number")
    }

    /// The binary, arguments and environment of its container, as the pod would run it.
    fn run(&self, documents: &[Value], files: &PodFiles) -> Run {
        let image = self.container["image"].as_str().expect("an image");
        let target = image
            .strip_prefix("streamgate/")
            .and_then(|rest| rest.split(':').next())
            .unwrap_or_else(|| panic!("{}: {image} is not a streamgate image", self.name));
        let config = ImageConfig::of(&read_repo_file(DOCKERFILE), target);
        assert!(self.container["command"].is_null(), "{}: `command` replaces the ENTRYPOINT", self.name);
        let [entrypoint] = config.entrypoint.as_slice() else { panic!("one binary as ENTRYPOINT") };
        let binary = entrypoint.strip_prefix(IMAGE_BIN_DIR).expect("in /usr/local/bin").to_owned();
        let args = if self.container["args"].is_null() {
            config.cmd.clone()
        } else {
            string_list(&self.container["args"])
        };

        let mut environment = config.env.clone();
        for source in self.container["envFrom"].as_sequence().into_iter().flatten() {
            let name = source["configMapRef"]["name"].as_str().expect("only configMapRef in envFrom");
            let config_map = documents
                .iter()
                .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == name)
                .unwrap_or_else(|| panic!("no ConfigMap {name}"));
            for (key, value) in config_map["data"].as_mapping().expect("ConfigMap data") {
                environment
                    .insert(key.as_str().unwrap().to_owned(), value.as_str().expect("a string").to_owned());
            }
        }
        for variable in self.container["env"].as_sequence().into_iter().flatten() {
            let name = variable["name"].as_str().unwrap().to_owned();
            let from = &variable["valueFrom"];
            if let Some(value) = variable["value"].as_str() {
                environment.insert(name, value.to_owned());
            } else if from["fieldRef"]["fieldPath"] == "metadata.name" {
                environment.insert(name, format!("{}{POD_NAME_SUFFIX}", self.name));
            } else if from["secretKeyRef"]["optional"] == true {
                // The Secret is not among the manifests: the variable is left unset.
            } else {
                panic!("{}: cannot render {name}: {variable:?}", self.name);
            }
        }
        for value in environment.values_mut() {
            if let Some(local) = files.local(&self.container, value) {
                *value = local;
            }
        }
        Run { binary, args, environment }
    }
}

fn string_list(value: &Value) -> Vec<String> {
    value.as_sequence().expect("a list").iter().map(|v| v.as_str().expect("a string").to_owned()).collect()
}
