//! The Kubernetes manifests of `deploy/kubernetes`: every overlay renders with `kubectl
//! kustomize`, validates against the schemas of one pinned Kubernetes version in strict mode
//! (kubernetes-validate), passes checkov's checks (the restricted Pod Security Standard among
//! them) and this file's own reading of the restricted standard, and embeds configs that
//! `idenfy-gateway check-config` accepts. Tools that are missing skip their test with a notice
//! unless `IDENFY_GATEWAY_REQUIRE_DEPLOY_TOOLS=1` (see `support::deploy`).

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_yaml_ng::Value;
use sha2::{Digest, Sha256};
use support::deploy::{
    at, deploy_dir, documents, id, list_at, name, overlays, render, run, str_at, tool, yaml_file,
};

/// The Kubernetes version the manifests are validated against: recent, and the first with
/// everything they use on by default (native sidecars GA in 1.33, the preStop `sleep` action).
const KUBERNETES_VERSION: &str = "1.34.0";

/// Kinds from the Prometheus Operator's CRDs, whose schemas kubernetes-validate does not ship.
const CRD_KINDS: &[&str] = &["ServiceMonitor", "PodMonitor", "PrometheusRule"];

/// checkov checks that these manifests fail on purpose, and why.
const CHECKOV_SKIPS: &[(&str, &str)] = &[
    // No image is published yet: the kustomizations pin a tag, and the README says to pin a
    // digest with `kustomize edit set image` for the registry the operator pushes to.
    ("CKV_K8S_43", "image by digest"),
    // With a pinned tag or digest, IfNotPresent is the right policy.
    ("CKV_K8S_15", "imagePullPolicy Always"),
    // Team tokens reach the gateway as `${VAR}` (it reads no token file yet); the key pairs,
    // the secrets that rotate, are files.
    ("CKV_K8S_35", "secrets as environment variables"),
];

/// Every overlay rendered, by folder name; `None` when kubectl is missing.
fn rendered() -> Option<BTreeMap<String, String>> {
    let kubectl = tool("kubectl")?;
    Some(
        overlays()
            .iter()
            .map(|overlay| (name(overlay), render(&kubectl, overlay)))
            .collect(),
    )
}

/// The pod template's spec of a workload, if it is one.
fn pod_spec(doc: &Value) -> Option<&Value> {
    let kind = str_at(doc, "kind");
    ["Deployment", "StatefulSet", "DaemonSet", "Job"]
        .contains(&kind)
        .then(|| at(doc, "spec.template.spec"))
}

/// Every container of a pod spec, init containers (native sidecars) included.
fn containers(spec: &Value) -> impl Iterator<Item = &Value> {
    list_at(spec, "containers")
        .iter()
        .chain(list_at(spec, "initContainers"))
}

#[test]
fn every_overlay_renders_with_what_it_promises() {
    let Some(rendered) = rendered() else { return };
    let kinds = |overlay: &str| -> Vec<String> {
        documents(&rendered[overlay])
            .iter()
            .map(|d| str_at(d, "kind").to_owned())
            .collect()
    };
    for kind in [
        "Namespace",
        "ServiceAccount",
        "ConfigMap",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "ServiceMonitor",
        "PrometheusRule",
    ] {
        assert!(kinds("shared-gateway").contains(&kind.to_owned()), "{kind}");
    }
    assert!(kinds("sidecar").contains(&"PodMonitor".to_owned()));
    assert!(kinds("shared-gateway-redis-trial").contains(&"StatefulSet".to_owned()));
    assert!(kinds("shared-gateway-webhooks").contains(&"Ingress".to_owned()));
    for (overlay, text) in &rendered {
        for doc in documents(text) {
            if str_at(&doc, "kind") != "Namespace" {
                assert!(
                    !str_at(&doc, "metadata.namespace").is_empty(),
                    "{overlay}: {} has no namespace",
                    id(&doc)
                );
            }
        }
    }
}

/// The restricted Pod Security Standard, as this test reads it, on every container of every
/// workload; plus what the issue adds (no service-account token, a pinned image, resources).
#[test]
fn every_workload_meets_the_restricted_pod_security_standard() {
    let Some(rendered) = rendered() else { return };
    let mut workloads = 0;
    for (overlay, text) in &rendered {
        for doc in documents(text) {
            let Some(spec) = pod_spec(&doc) else { continue };
            workloads += 1;
            let what = format!("{overlay}: {}", id(&doc));
            assert_eq!(
                at(spec, "automountServiceAccountToken").as_bool(),
                Some(false),
                "{what}"
            );
            for volume in list_at(spec, "volumes") {
                assert!(at(volume, "hostPath").is_null(), "{what}: hostPath");
            }
            for flag in ["hostNetwork", "hostPID", "hostIPC"] {
                assert_ne!(at(spec, flag).as_bool(), Some(true), "{what}: {flag}");
            }
            for c in containers(spec) {
                let what = format!("{what} container {}", str_at(c, "name"));
                let either = |path: &str| {
                    let own = at(c, &format!("securityContext.{path}"));
                    if own.is_null() {
                        at(spec, &format!("securityContext.{path}")).clone()
                    } else {
                        own.clone()
                    }
                };
                assert_eq!(either("runAsNonRoot").as_bool(), Some(true), "{what}");
                assert_ne!(either("runAsUser").as_u64(), Some(0), "{what}");
                assert_eq!(
                    either("seccompProfile.type").as_str(),
                    Some("RuntimeDefault"),
                    "{what}"
                );
                let sc = |path: &str| at(c, &format!("securityContext.{path}"));
                assert_eq!(
                    sc("allowPrivilegeEscalation").as_bool(),
                    Some(false),
                    "{what}"
                );
                assert_eq!(sc("readOnlyRootFilesystem").as_bool(), Some(true), "{what}");
                assert_ne!(sc("privileged").as_bool(), Some(true), "{what}");
                let drop: Vec<&str> = list_at(c, "securityContext.capabilities.drop")
                    .iter()
                    .filter_map(Value::as_str)
                    .collect();
                assert_eq!(drop, ["ALL"], "{what}");
                assert!(
                    list_at(c, "securityContext.capabilities.add").is_empty(),
                    "{what}"
                );
                let image = str_at(c, "image");
                let tag = image.rsplit_once(':').map(|(_, tag)| tag).unwrap_or("");
                assert!(
                    image.contains("@sha256:")
                        || !(tag.is_empty() || tag == "latest" || tag.contains('/')),
                    "{what}: image {image:?} is neither pinned by tag nor by digest"
                );
                for kind in ["requests", "limits"] {
                    for resource in ["cpu", "memory"] {
                        assert!(
                            !at(c, &format!("resources.{kind}.{resource}")).is_null(),
                            "{what}: no {kind}.{resource}"
                        );
                    }
                }
            }
        }
    }
    assert!(workloads >= 5, "{workloads} workloads");
}

/// The shared gateway: replicas, HPA, PDB, spread, probes on the admin port, a grace period
/// longer than the drain, the key pairs as whole Secret directories.
#[test]
fn shared_gateway_is_highly_available_and_drains() {
    let Some(rendered) = rendered() else { return };
    let docs = documents(&rendered["shared-gateway"]);
    let find = |kind: &str| {
        docs.iter()
            .find(|d| str_at(d, "kind") == kind)
            .unwrap_or_else(|| panic!("no {kind}"))
    };
    let deployment = find("Deployment");
    assert!(at(deployment, "spec.replicas").as_u64() >= Some(2));
    assert!(at(find("HorizontalPodAutoscaler"), "spec.minReplicas").as_u64() >= Some(2));
    assert!(!at(find("PodDisruptionBudget"), "spec.maxUnavailable").is_null());
    let spec = at(deployment, "spec.template.spec");
    let keys: Vec<&str> = list_at(spec, "topologySpreadConstraints")
        .iter()
        .map(|c| str_at(c, "topologyKey"))
        .collect();
    assert_eq!(
        keys,
        ["kubernetes.io/hostname", "topology.kubernetes.io/zone"]
    );

    let config = embedded_config(&docs, "idenfy-gateway-config");
    let grace = duration_secs(config["listen"]["shutdown_grace"].as_str().unwrap());
    let c = &list_at(spec, "containers")[0];
    let sleep = at(c, "lifecycle.preStop.sleep.seconds")
        .as_u64()
        .expect("preStop sleep");
    let period = at(spec, "terminationGracePeriodSeconds").as_u64().unwrap();
    assert!(period > grace + sleep, "{period} <= {grace} + {sleep}");
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(
            str_at(c, &format!("{probe}.httpGet.port")),
            "admin",
            "{probe}"
        );
    }
    assert_eq!(str_at(c, "readinessProbe.httpGet.path"), "/readyz");
    assert_eq!(str_at(c, "livenessProbe.httpGet.path"), "/healthz");
    secrets_are_whole_directories(spec, c);
}

/// The webhook overlay: the listener on, in the config and as a port, behind its own Service;
/// one replica replaced whole (the queue is the pod's), its store on the PersistentVolumeClaim,
/// the webhook keys as a whole Secret directory; the ingress controller admitted to that port
/// only, and deliveries admitted out to the teams' namespaces.
#[test]
fn webhook_overlay_runs_the_listener_on_one_replica_with_a_persistent_queue() {
    let Some(rendered) = rendered() else { return };
    let docs = documents(&rendered["shared-gateway-webhooks"]);
    let find = |kind: &str| docs.iter().find(|d| str_at(d, "kind") == kind);
    let config = embedded_config(&docs, "idenfy-gateway-config");
    assert_eq!(config["listen"]["webhook"].as_str(), Some("0.0.0.0:8443"));
    let dir = config["webhooks"]["dir"].as_str().unwrap();
    for account in config["account"].as_array().unwrap() {
        assert!(account.get("webhook_key_file").is_some(), "{account:?}");
    }
    for team in config["team"].as_array().unwrap() {
        assert!(team.get("webhook_url").is_some(), "{team:?}");
        assert!(team.get("webhook_key_file").is_some(), "{team:?}");
    }

    let deployment = find("Deployment").expect("Deployment");
    assert_eq!(at(deployment, "spec.replicas").as_u64(), Some(1));
    assert_eq!(str_at(deployment, "spec.strategy.type"), "Recreate");
    assert!(
        find("HorizontalPodAutoscaler").is_none(),
        "an HPA would add replicas"
    );
    let spec = at(deployment, "spec.template.spec");
    let c = &list_at(spec, "containers")[0];
    assert!(list_at(c, "ports")
        .iter()
        .any(|p| str_at(p, "name") == "webhook" && at(p, "containerPort").as_u64() == Some(8443)));
    let claim = str_at(find("PersistentVolumeClaim").expect("PVC"), "metadata.name");
    let volume = list_at(spec, "volumes")
        .iter()
        .find(|v| str_at(v, "persistentVolumeClaim.claimName") == claim)
        .expect("the claim is a volume");
    assert!(list_at(c, "volumeMounts")
        .iter()
        .any(|m| { str_at(m, "name") == str_at(volume, "name") && str_at(m, "mountPath") == dir }));
    secrets_are_whole_directories(spec, c);

    let service = docs
        .iter()
        .find(|d| {
            str_at(d, "kind") == "Service" && str_at(d, "metadata.name").ends_with("-webhook")
        })
        .expect("the webhook Service");
    assert_eq!(
        str_at(&list_at(service, "spec.ports")[0], "targetPort"),
        "webhook"
    );
    let policy = find("NetworkPolicy").expect("NetworkPolicy");
    let to_webhook: Vec<&Value> = list_at(policy, "spec.ingress")
        .iter()
        .filter(|rule| {
            list_at(rule, "ports")
                .iter()
                .any(|p| str_at(p, "port") == "webhook")
        })
        .collect();
    assert_eq!(to_webhook.len(), 1);
    assert_eq!(
        list_at(to_webhook[0], "ports").len(),
        1,
        "the webhook port only"
    );
    assert!(list_at(policy, "spec.egress").iter().any(|rule| {
        list_at(rule, "to")
            .iter()
            .any(|to| str_at(to, "namespaceSelector.matchLabels.idenfy-gateway/client") == "true")
    }));
}

/// A Secret volume mounted with subPath never sees kubelet's swap of a rotated Secret.
fn secrets_are_whole_directories(spec: &Value, container: &Value) {
    let secrets: Vec<&str> = list_at(spec, "volumes")
        .iter()
        .filter(|v| !at(v, "secret").is_null())
        .map(|v| str_at(v, "name"))
        .collect();
    assert!(!secrets.is_empty());
    for mount in list_at(container, "volumeMounts") {
        if secrets.contains(&str_at(mount, "name")) {
            assert!(at(mount, "subPath").is_null(), "{mount:?}");
        }
    }
}

/// The sidecar: a native sidecar (init container, `restartPolicy: Always`) in one overlay, a
/// plain container in the other; its proxy on loopback, its admin port on the pod IP with the
/// probes on it.
#[test]
fn sidecar_runs_natively_or_plainly_with_probes_on_the_admin_port() {
    let Some(rendered) = rendered() else { return };
    for (overlay, native) in [("sidecar", true), ("sidecar-plain", false)] {
        let docs = documents(&rendered[overlay]);
        let app = docs
            .iter()
            .find(|d| str_at(d, "kind") == "Deployment")
            .unwrap();
        let spec = at(app, "spec.template.spec");
        let list = if native {
            "initContainers"
        } else {
            "containers"
        };
        let gateway = list_at(spec, list)
            .iter()
            .find(|c| str_at(c, "name") == "idenfy-gateway")
            .unwrap_or_else(|| panic!("{overlay}: no idenfy-gateway in {list}"));
        assert_eq!(
            str_at(gateway, "restartPolicy") == "Always",
            native,
            "{overlay}"
        );
        let config = embedded_config(&docs, "idenfy-gateway-sidecar-config");
        let proxy: std::net::SocketAddr =
            config["listen"]["proxy"].as_str().unwrap().parse().unwrap();
        let admin: std::net::SocketAddr =
            config["listen"]["admin"].as_str().unwrap().parse().unwrap();
        assert!(proxy.ip().is_loopback(), "{overlay}: proxy {proxy}");
        assert!(admin.ip().is_unspecified(), "{overlay}: admin {admin}");
        let port = list_at(gateway, "ports")
            .iter()
            .find(|p| str_at(p, "name") == "gateway-admin")
            .expect("admin port");
        assert_eq!(
            at(port, "containerPort").as_u64(),
            Some(u64::from(admin.port()))
        );
        for probe in ["readinessProbe", "livenessProbe"] {
            assert_eq!(
                str_at(gateway, &format!("{probe}.httpGet.port")),
                "gateway-admin"
            );
        }
        secrets_are_whole_directories(spec, gateway);
        let app = list_at(spec, "containers")
            .iter()
            .find(|c| str_at(c, "name") == "app")
            .unwrap();
        let app_env = list_at(app, "env");
        assert!(app_env
            .iter()
            .any(|e| str_at(e, "value") == format!("http://127.0.0.1:{}", proxy.port())));
    }
}

/// The `config.toml` of a rendered ConfigMap (its name starts with `prefix`), parsed.
fn embedded_config(docs: &[Value], prefix: &str) -> toml::Table {
    let map = docs
        .iter()
        .find(|d| {
            str_at(d, "kind") == "ConfigMap" && str_at(d, "metadata.name").starts_with(prefix)
        })
        .unwrap_or_else(|| panic!("no ConfigMap {prefix}"));
    at(map, "data")["config.toml"]
        .as_str()
        .unwrap_or("")
        .parse()
        .expect("config.toml is TOML")
}

/// Seconds of a whole-second duration string (`"30s"`).
fn duration_secs(text: &str) -> u64 {
    text.strip_suffix('s')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{text:?}"))
}

/// Each config the manifests embed, as kustomize renders it into its ConfigMap, passes
/// `idenfy-gateway check-config` with its secret files in place and its variables set.
#[test]
fn every_embedded_config_passes_check_config() {
    let Some(rendered) = rendered() else { return };
    let mut checked = 0;
    for (overlay, text) in &rendered {
        for doc in documents(text) {
            if str_at(&doc, "kind") != "ConfigMap" {
                continue;
            }
            let config = at(&doc, "data")["config.toml"].as_str().unwrap_or("");
            check_config(&format!("{overlay}: {}", id(&doc)), config);
            checked += 1;
        }
    }
    assert!(checked >= 5, "{checked} configs");
}

/// Runs the binary's `check-config` on `text`, with every `/run/secrets/...` file it names
/// created under a temporary folder and every `${VAR}` set.
fn check_config(what: &str, text: &str) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap();
    let text = text.replace("/run/secrets", &format!("{root}/secrets"));
    let parsed: toml::Table = text.parse().unwrap();
    // Key pairs, webhook keys, token files: every `*_file` of an account or a team.
    let entries = ["account", "team"]
        .iter()
        .filter_map(|table| parsed.get(*table).and_then(toml::Value::as_array))
        .flatten();
    for entry in entries {
        let files = entry
            .as_table()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.ends_with("_file"));
        for (_, file) in files {
            let path = Path::new(file.as_str().unwrap());
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, "value\n").unwrap();
        }
    }
    let file = dir.path().join("config.toml");
    std::fs::write(&file, &text).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_idenfy-gateway"));
    command.args(["check-config", "--config"]).arg(&file);
    for var in text.split("${").skip(1).filter_map(|s| s.split_once('}')) {
        command.env(var.0, format!("token-for-{}", var.0));
    }
    let out = run(&mut command);
    assert!(
        out.status.success(),
        "{what}: check-config refused it:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The `checksum/...` annotations are the SHA-256 of the config files they stand for, and the
/// two copies of the sidecar's config are one file.
#[test]
fn config_checksums_match_their_files() {
    let k8s = deploy_dir().join("kubernetes");
    let sha = |path: &str| hex::encode(Sha256::digest(std::fs::read(k8s.join(path)).unwrap()));
    let annotation = |path: &str, key: &str| {
        let doc = yaml_file(&k8s.join(path));
        at(&doc, "spec.template.metadata.annotations")[key]
            .as_str()
            .unwrap_or_else(|| panic!("{path}: no {key}"))
            .to_owned()
    };
    assert_eq!(
        annotation("base/deployment.yaml", "checksum/config"),
        sha("base/config.toml"),
        "update checksum/config in base/deployment.yaml: sha256sum base/config.toml"
    );
    for component in ["sidecar", "sidecar-plain"] {
        assert_eq!(
            annotation(
                &format!("components/{component}/sidecar-patch.yaml"),
                "checksum/idenfy-gateway-config"
            ),
            sha(&format!("components/{component}/sidecar.toml")),
            "update checksum/idenfy-gateway-config in components/{component}/sidecar-patch.yaml"
        );
    }
    assert_eq!(
        annotation(
            "components/webhook-ingress/deployment-patch.yaml",
            "checksum/config"
        ),
        sha("components/webhook-ingress/config.toml"),
        "update checksum/config in components/webhook-ingress/deployment-patch.yaml: \
         sha256sum components/webhook-ingress/config.toml"
    );
    assert_eq!(
        sha("components/sidecar/sidecar.toml"),
        sha("components/sidecar-plain/sidecar.toml")
    );
}

/// Strict schema validation of every overlay against one pinned Kubernetes version; only the
/// Prometheus Operator's kinds may lack a schema. A manifest with an unknown field fails, so the
/// tool is known to look.
#[test]
fn every_overlay_validates_against_the_kubernetes_schemas_in_strict_mode() {
    let Some(rendered) = rendered() else { return };
    let Some(validate) = tool("kubernetes-validate") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let check = |file: &Path| {
        let out = run(Command::new(&validate)
            .args(["--strict", "--kubernetes-version", KUBERNETES_VERSION])
            .arg(file));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let unexpected: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with("INFO"))
            .filter(|l| {
                !CRD_KINDS
                    .iter()
                    .any(|k| l.contains(&format!("schema for kind {k} ")))
            })
            .collect();
        (out.status.success() && unexpected.is_empty(), text)
    };
    for (overlay, text) in &rendered {
        let file = dir.path().join(format!("{overlay}.yaml"));
        std::fs::write(&file, text).unwrap();
        let (ok, output) = check(&file);
        assert!(ok, "{overlay}:\n{output}");
        assert!(
            output.contains("passed for resource deployment/"),
            "{output}"
        );
    }
    let bad = dir.path().join("bad.yaml");
    let typo =
        rendered["shared-gateway"].replacen("revisionHistoryLimit:", "revisionHistoryLimitt:", 1);
    std::fs::write(&bad, typo).unwrap();
    assert!(
        !check(&bad).0,
        "kubernetes-validate accepted an unknown field"
    );
}

/// checkov's Kubernetes checks (the restricted Pod Security Standard's among them) on every
/// overlay, with the few skips of [`CHECKOV_SKIPS`]. A sidecar made writable fails, so the
/// check is known to read init containers.
#[test]
fn every_overlay_passes_checkov() {
    let Some(rendered) = rendered() else { return };
    let Some(checkov) = tool("checkov") else {
        return;
    };
    let skips: Vec<&str> = CHECKOV_SKIPS.iter().map(|(id, _)| *id).collect();
    let scan = |files: &[(String, String)]| {
        // Not tempdir()'s `.tmp…`: checkov skips folders whose name starts with a dot.
        let dir = tempfile::Builder::new()
            .prefix("checkov-")
            .tempdir()
            .unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(format!("{name}.yaml")), text).unwrap();
        }
        let out = run(Command::new(&checkov)
            .arg("--directory")
            .arg(dir.path())
            .args([
                "--framework",
                "kubernetes",
                "--compact",
                "--quiet",
                "--skip-download",
            ])
            .args(["--skip-check", &skips.join(",")])
            .env("BC_SKIP_MAPPING", "TRUE"));
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let files: Vec<(String, String)> = rendered.clone().into_iter().collect();
    let (ok, report) = scan(&files);
    assert!(ok && report.contains("Failed checks: 0"), "{report}");

    // The init container is listed after the app's container: make the sidecar's root writable.
    let sidecar = &rendered["sidecar"];
    let at = sidecar.rfind("readOnlyRootFilesystem: true").unwrap();
    let writable = format!(
        "{}readOnlyRootFilesystem: false{}",
        &sidecar[..at],
        &sidecar[at + "readOnlyRootFilesystem: true".len()..]
    );
    let (ok, report) = scan(&[("sidecar".to_owned(), writable)]);
    assert!(!ok && report.contains("CKV_K8S_22"), "{report}");
}

/// Whether every `matchLabels` pair of `selector` is among `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    let wanted = at(selector, "matchLabels")
        .as_mapping()
        .expect("matchLabels");
    wanted
        .iter()
        .all(|(k, v)| &labels[k.as_str().unwrap()] == v)
}

/// The Prometheus Operator's kinds have no schema to validate against: the ServiceMonitor must
/// select the admin Service and name its port, and the PodMonitor must select the sidecar's pods
/// and name the sidecar's admin port.
#[test]
fn monitors_select_the_admin_ports() {
    let Some(rendered) = rendered() else { return };
    let docs = documents(&rendered["shared-gateway"]);
    let monitor = docs
        .iter()
        .find(|d| str_at(d, "kind") == "ServiceMonitor")
        .unwrap();
    let port = str_at(&list_at(monitor, "spec.endpoints")[0], "port");
    let services: Vec<&Value> = docs
        .iter()
        .filter(|d| str_at(d, "kind") == "Service")
        .filter(|s| selects(at(monitor, "spec.selector"), at(s, "metadata.labels")))
        .collect();
    assert_eq!(
        services.len(),
        1,
        "the ServiceMonitor selects {} Services",
        services.len()
    );
    let target = list_at(services[0], "spec.ports")
        .iter()
        .find(|p| str_at(p, "name") == port)
        .unwrap_or_else(|| panic!("no port {port} on {}", id(services[0])));
    assert_eq!(str_at(target, "targetPort"), "admin");

    for overlay in ["sidecar", "sidecar-plain"] {
        let docs = documents(&rendered[overlay]);
        let monitor = docs
            .iter()
            .find(|d| str_at(d, "kind") == "PodMonitor")
            .unwrap();
        let app = docs
            .iter()
            .find(|d| str_at(d, "kind") == "Deployment")
            .unwrap();
        assert!(selects(
            at(monitor, "spec.selector"),
            at(app, "spec.template.metadata.labels")
        ));
        let port = str_at(&list_at(monitor, "spec.podMetricsEndpoints")[0], "port");
        let named = containers(at(app, "spec.template.spec"))
            .filter(|c| str_at(c, "name") == "idenfy-gateway")
            .flat_map(|c| list_at(c, "ports"))
            .any(|p| str_at(p, "name") == port);
        assert!(named, "{overlay}: the sidecar has no port {port}");
    }
}
