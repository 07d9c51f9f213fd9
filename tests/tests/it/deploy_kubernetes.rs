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

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use serde::Deserialize;
use serde_yaml_ng::{Mapping, Value};
use streamgate_tests::binaries::workspace_binary;
use streamgate_tests::rig::free_port;

use crate::deploy_compose::{
    IMAGE_BIN_DIR, ImageConfig, REDIS_DEFAULT_PORT, ServiceProcess, read_repo_file, start_redis_command,
};

const K8S_DIR: &str = "deploy/k8s";
const DOCKERFILE: &str = "deploy/Dockerfile";
/// What the pod name of a Deployment's pod looks like (`fieldRef: metadata.name`).
const POD_NAME_SUFFIX: &str = "-5d8c7b9f4-x2x7q";

#[tokio::test]
async fn kubernetes_workloads_answer_their_probes_on_the_ports_their_services_name() {
    let documents = rendered_manifests();
    let logs = tempfile::tempdir().unwrap();

    let redis = workload(&documents, "StatefulSet", "redis");
    let redis_args = string_list(&redis.container["args"]);
    assert_eq!(redis.container_port("redis"), REDIS_DEFAULT_PORT, "the redis container port");
    let (redis_server, _) = start_redis_command(&redis_args);

    for name in ["gateway", "producer"] {
        let deployment = workload(&documents, "Deployment", name);
        let run = deployment.run(&documents);
        let listen: SocketAddr = run.environment["LISTEN_ADDR"].parse().expect("LISTEN_ADDR is an address");
        assert_eq!(listen.port(), deployment.container_port("http"), "{name} listens on its `http` port");

        let mut environment = run.environment.clone();
        let redis_url = &environment["REDIS_URL"];
        let rest = redis_url
            .strip_prefix(&format!("redis://redis:{REDIS_DEFAULT_PORT}"))
            .unwrap_or_else(|| panic!("{name}: REDIS_URL={redis_url} does not name the redis Service"));
        environment.insert("REDIS_URL".into(), format!("{}{rest}", redis_server.url()));
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

    // The janitor's CronJob: one sweep against the same Redis, exit 0, one JSON line.
    let janitor = workload(&documents, "CronJob", "janitor");
    let run = janitor.run(&documents);
    let mut environment = run.environment.clone();
    environment.insert("REDIS_URL".into(), redis_server.url());
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

// --- Rendering ---------------------------------------------------------------------------

/// The parts of `kustomization.yaml` this test renders; any other field fails the parse,
/// so a kustomization that grows (images, patches) is rendered here too or noticed.
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

/// Every document of every resource `kustomization.yaml` lists, with its labels applied.
fn rendered_manifests() -> Vec<Value> {
    let kustomization: Kustomization =
        serde_yaml_ng::from_str(&read_repo_file(&format!("{K8S_DIR}/kustomization.yaml")))
            .expect("kustomization");
    let mut documents = Vec::new();
    for resource in &kustomization.resources {
        let text = read_repo_file(&format!("{K8S_DIR}/{resource}"));
        for document in serde_yaml_ng::Deserializer::from_str(&text) {
            let mut document = Value::deserialize(document).expect("a manifest parses");
            for set in &kustomization.labels {
                assert!(!set.include_selectors && !set.include_templates, "render selector labels too");
                let labels = document["metadata"]
                    .as_mapping_mut()
                    .expect("metadata")
                    .entry("labels".into())
                    .or_insert_with(|| Value::Mapping(Mapping::new()));
                for (key, value) in &set.pairs {
                    labels
                        .as_mapping_mut()
                        .expect("labels")
                        .insert(key.as_str().into(), value.as_str().into());
                }
            }
            documents.push(document);
        }
    }
    documents
}

// --- Workloads ----------------------------------------------------------------------------

/// A Deployment, StatefulSet or CronJob: its (one) container and its pods' labels.
#[derive(Debug, Clone)]
struct Workload {
    kind: String,
    name: String,
    container: Value,
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
    fn run(&self, documents: &[Value]) -> Run {
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
        Run { binary, args, environment }
    }
}

fn string_list(value: &Value) -> Vec<String> {
    value.as_sequence().expect("a list").iter().map(|v| v.as_str().expect("a string").to_owned()).collect()
}
