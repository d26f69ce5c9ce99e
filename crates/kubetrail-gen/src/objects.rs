//! Request bodies: pods and the workloads that template them (2-10 KB, as real ones are), leases, node
//! status patches, bindings, RBAC objects.

use crate::cluster::{Workload, WorkloadKind};
use crate::json::Jw;
use crate::rng::Rand;

/// Env var names and values a service's container commonly carries; `{app}` and `{ns}` are substituted.
const ENV: &[(&str, &str)] = &[
    ("LOG_LEVEL", "info"),
    ("LOG_FORMAT", "json"),
    ("HTTP_PORT", "8080"),
    ("METRICS_PORT", "9090"),
    ("OTEL_SERVICE_NAME", "{app}"),
    (
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "http://otel-collector.monitoring.svc.cluster.local:4317",
    ),
    (
        "OTEL_RESOURCE_ATTRIBUTES",
        "service.namespace={ns},deployment.environment={ns}",
    ),
    (
        "DATABASE_URL",
        "postgres://{app}@{app}-db.{ns}.svc.cluster.local:5432/{app}?sslmode=require&pool_max_conns=20",
    ),
    (
        "REDIS_URL",
        "redis://redis-master.{ns}.svc.cluster.local:6379/0",
    ),
    (
        "KAFKA_BOOTSTRAP_SERVERS",
        "kafka-0.kafka-headless.data.svc.cluster.local:9092,kafka-1.kafka-headless.data.svc.cluster.local:9092,kafka-2.kafka-headless.data.svc.cluster.local:9092",
    ),
    (
        "JAVA_TOOL_OPTIONS",
        "-XX:MaxRAMPercentage=75.0 -XX:+UseG1GC -XX:+ExitOnOutOfMemoryError -Dfile.encoding=UTF-8 -Duser.timezone=UTC",
    ),
    (
        "FEATURE_FLAGS",
        "new-checkout=true,async-ledger=false,3ds-v2=true,risk-engine-v3=canary",
    ),
    ("TZ", "UTC"),
    ("HTTP_CLIENT_TIMEOUT", "30s"),
    ("MAX_CONNECTIONS", "200"),
    ("CACHE_TTL_SECONDS", "300"),
    ("AWS_REGION", "eu-west-1"),
    ("AWS_STS_REGIONAL_ENDPOINTS", "regional"),
    ("S3_BUCKET", "{app}-artifacts-{ns}"),
    ("SENTRY_ENVIRONMENT", "{ns}"),
    ("GRPC_GO_RETRY", "on"),
    (
        "UPSTREAM_LEDGER_URL",
        "http://ledger-worker.prod-payments.svc.cluster.local:8080",
    ),
    ("RATE_LIMIT_PER_MINUTE", "6000"),
    ("SHUTDOWN_GRACE_PERIOD", "25s"),
    (
        "ALLOWED_ORIGINS",
        "https://shop.example.com,https://www.example.com,https://admin.example.com",
    ),
];

/// Env vars filled from the Downward API.
const FIELD_ENV: &[(&str, &str)] = &[
    ("POD_NAME", "metadata.name"),
    ("POD_NAMESPACE", "metadata.namespace"),
    ("POD_IP", "status.podIP"),
    ("NODE_NAME", "spec.nodeName"),
];

/// Writes a pod's `spec` fields (into an open object): what a controller sends, defaulted from the
/// template, before admission adds the service-account volume and default tolerations.
fn write_pod_spec(w: &mut Jw<'_>, wl: &Workload, node: Option<&str>) {
    // The same workload always sends the same template.
    let mut rng = Rand::new(wl.template_seed, 11);
    let rng = &mut rng;
    w.arr("volumes", |w| {
        for cm in &wl.configmaps {
            w.el_obj(|w| {
                w.str("name", cm);
                w.obj("configMap", |w| {
                    w.str("name", cm);
                    w.num("defaultMode", 420);
                });
            });
        }
        for s in &wl.secrets {
            w.el_obj(|w| {
                w.str("name", s);
                w.obj("secret", |w| {
                    w.str("secretName", s);
                    w.num("defaultMode", 420);
                });
            });
        }
        w.el_obj(|w| {
            w.str("name", "tmp");
            w.obj("emptyDir", |w| w.str("sizeLimit", "256Mi"));
        });
        if wl.kind == WorkloadKind::DaemonSet {
            for (name, path) in [("proc", "/proc"), ("sys", "/sys"), ("varlog", "/var/log")] {
                w.el_obj(|w| {
                    w.str("name", name);
                    w.obj("hostPath", |w| {
                        w.str("path", path);
                        w.str("type", "");
                    });
                });
            }
        }
    });
    if wl.init {
        w.arr("initContainers", |w| {
            w.el_obj(|w| {
                w.str("name", "wait-for-deps");
                w.str("image", "registry.example.com/platform/wait-for:v2.2.4");
                w.strs(
                    "args",
                    &[
                        "--timeout=120s",
                        "--tcp=postgres.data.svc.cluster.local:5432",
                        "--tcp=redis-master.data.svc.cluster.local:6379",
                    ],
                );
                resources(w, "50m", "32Mi", "100m", "64Mi");
                defaults(w);
                restricted(w);
            });
        });
    }
    w.arr("containers", |w| {
        w.el_obj(|w| app_container(w, rng, wl));
        if wl.sidecar {
            w.el_obj(|w| {
                w.str("name", "log-shipper");
                w.str("image", "cr.fluentbit.io/fluent/fluent-bit:3.0.4");
                w.strs("args", &["--config=/fluent-bit/etc/fluent-bit.yaml"]);
                w.arr("env", |w| {
                    for (name, path) in &FIELD_ENV[..2] {
                        w.el_obj(|w| field_env(w, name, path));
                    }
                });
                resources(w, "20m", "32Mi", "200m", "128Mi");
                w.arr("volumeMounts", |w| {
                    w.el_obj(|w| {
                        w.str("name", "tmp");
                        w.str("mountPath", "/var/log/app");
                        w.bool("readOnly", true);
                    });
                });
                defaults(w);
                restricted(w);
            });
        }
    });
    w.str("restartPolicy", "Always");
    w.num("terminationGracePeriodSeconds", 30);
    w.str("dnsPolicy", "ClusterFirst");
    w.str("serviceAccountName", wl.sa);
    w.str("serviceAccount", wl.sa);
    if let Some(node) = node {
        w.str("nodeName", node);
    }
    if wl.kind == WorkloadKind::DaemonSet {
        w.bool("hostNetwork", true);
        w.arr("tolerations", |w| {
            w.el_obj(|w| w.str("operator", "Exists"));
        });
    } else {
        w.obj("securityContext", |w| {
            w.num("runAsUser", 10001);
            w.num("runAsGroup", 10001);
            w.num("fsGroup", 10001);
            w.obj("seccompProfile", |w| w.str("type", "RuntimeDefault"));
        });
        w.obj("affinity", |w| {
            w.obj("podAntiAffinity", |w| {
                w.arr("preferredDuringSchedulingIgnoredDuringExecution", |w| {
                    w.el_obj(|w| {
                        w.num("weight", 100);
                        w.obj("podAffinityTerm", |w| {
                            w.obj("labelSelector", |w| {
                                w.obj("matchLabels", |w| w.str("app.kubernetes.io/name", wl.app));
                            });
                            w.str("topologyKey", "topology.kubernetes.io/zone");
                        });
                    });
                });
            });
        });
        w.arr("topologySpreadConstraints", |w| {
            w.el_obj(|w| {
                w.num("maxSkew", 1);
                w.str("topologyKey", "kubernetes.io/hostname");
                w.str("whenUnsatisfiable", "ScheduleAnyway");
                w.obj("labelSelector", |w| {
                    w.obj("matchLabels", |w| w.str("app.kubernetes.io/name", wl.app));
                });
            });
        });
    }
    w.str("schedulerName", "default-scheduler");
    w.bool("enableServiceLinks", false);
}

fn app_container(w: &mut Jw<'_>, rng: &mut Rand, wl: &Workload) {
    w.str(
        "name",
        if wl.kind == WorkloadKind::DaemonSet {
            wl.app
        } else {
            "app"
        },
    );
    w.str("image", &wl.image);
    w.strs("args", &["serve", "--config=/etc/app/config.yaml"]);
    w.arr("ports", |w| {
        for (name, port) in [("http", wl.port), ("metrics", 9090)] {
            w.el_obj(|w| {
                w.str("name", name);
                w.num("containerPort", port);
                w.str("protocol", "TCP");
            });
        }
    });
    w.arr("env", |w| {
        let start = rng.below(ENV.len());
        for i in 0..wl.env {
            let (name, value) = ENV[(start + i) % ENV.len()];
            let value = value.replace("{app}", wl.app).replace("{ns}", wl.ns);
            w.el_obj(|w| {
                w.str("name", name);
                w.str("value", &value);
            });
        }
        for (name, path) in FIELD_ENV {
            w.el_obj(|w| field_env(w, name, path));
        }
        for s in wl.secrets.iter().take(1) {
            for key in ["username", "password"] {
                w.el_obj(|w| {
                    w.str("name", &format!("DB_{}", key.to_uppercase()));
                    w.obj("valueFrom", |w| {
                        w.obj("secretKeyRef", |w| {
                            w.str("name", s);
                            w.str("key", key);
                        });
                    });
                });
            }
        }
    });
    let (cpu, mem) = *rng.pick(&[
        ("100m", "128Mi"),
        ("250m", "256Mi"),
        ("500m", "512Mi"),
        ("1", "1Gi"),
    ]);
    resources(w, cpu, mem, if cpu == "1" { "2" } else { "1" }, mem);
    w.arr("volumeMounts", |w| {
        for cm in &wl.configmaps {
            w.el_obj(|w| {
                w.str("name", cm);
                w.str("mountPath", "/etc/app");
                w.bool("readOnly", true);
            });
        }
        for s in &wl.secrets {
            w.el_obj(|w| {
                w.str("name", s);
                w.str("mountPath", &format!("/var/run/secrets/{s}"));
                w.bool("readOnly", true);
            });
        }
        w.el_obj(|w| {
            w.str("name", "tmp");
            w.str("mountPath", "/tmp");
        });
    });
    for (probe, path, delay) in [
        ("livenessProbe", "/healthz", 15),
        ("readinessProbe", "/readyz", 5),
    ] {
        w.obj(probe, |w| {
            w.obj("httpGet", |w| {
                w.str("path", path);
                w.str("port", "http");
                w.str("scheme", "HTTP");
            });
            w.num("initialDelaySeconds", delay);
            w.num("timeoutSeconds", 2);
            w.num("periodSeconds", 10);
            w.num("successThreshold", 1);
            w.num("failureThreshold", 3);
        });
    }
    defaults(w);
    restricted(w);
}

fn field_env(w: &mut Jw<'_>, name: &str, path: &str) {
    w.str("name", name);
    w.obj("valueFrom", |w| {
        w.obj("fieldRef", |w| {
            w.str("apiVersion", "v1");
            w.str("fieldPath", path);
        });
    });
}

fn resources(w: &mut Jw<'_>, cpu: &str, mem: &str, cpu_limit: &str, mem_limit: &str) {
    w.obj("resources", |w| {
        w.obj("limits", |w| {
            w.str("cpu", cpu_limit);
            w.str("memory", mem_limit);
        });
        w.obj("requests", |w| {
            w.str("cpu", cpu);
            w.str("memory", mem);
        });
    });
}

fn defaults(w: &mut Jw<'_>) {
    w.str("terminationMessagePath", "/dev/termination-log");
    w.str("terminationMessagePolicy", "File");
    w.str("imagePullPolicy", "IfNotPresent");
}

fn restricted(w: &mut Jw<'_>) {
    w.obj("securityContext", |w| {
        w.obj("capabilities", |w| w.strs("drop", &["ALL"]));
        w.bool("runAsNonRoot", true);
        w.bool("readOnlyRootFilesystem", true);
        w.bool("allowPrivilegeEscalation", false);
    });
}

fn labels(w: &mut Jw<'_>, wl: &Workload, with_hash: bool) {
    w.obj("labels", |w| {
        w.str("app.kubernetes.io/name", wl.app);
        w.str("app.kubernetes.io/instance", wl.app);
        w.str("app.kubernetes.io/part-of", wl.ns);
        w.str("app.kubernetes.io/version", wl.version());
        if with_hash {
            match wl.kind {
                WorkloadKind::Deployment => w.str("pod-template-hash", &wl.hash),
                WorkloadKind::DaemonSet => {
                    w.str("controller-revision-hash", &wl.hash);
                    w.str("pod-template-generation", "3");
                }
            }
        }
    });
}

fn template_annotations(w: &mut Jw<'_>, wl: &Workload) {
    w.obj("annotations", |w| {
        w.str("kubectl.kubernetes.io/restartedAt", "2025-12-18T09:41:07Z");
        w.str("prometheus.io/scrape", "true");
        w.str("prometheus.io/port", "9090");
        w.str("checksum/config", &wl.config_checksum);
    });
}

/// The Pod a ReplicaSet or DaemonSet controller creates from its template (`generateName`, no name yet).
pub(crate) fn controller_pod(wl: &Workload, node: Option<&str>) -> Vec<u8> {
    let mut buf = Vec::with_capacity(6 * 1024);
    let (owner_kind, owner_name) = match wl.kind {
        WorkloadKind::Deployment => ("ReplicaSet", format!("{}-{}", wl.app, wl.hash)),
        WorkloadKind::DaemonSet => ("DaemonSet", wl.app.to_string()),
    };
    Jw::object(&mut buf, |w| {
        w.str("kind", "Pod");
        w.str("apiVersion", "v1");
        w.obj("metadata", |w| {
            w.str("generateName", &wl.generate_name());
            w.str("namespace", wl.ns);
            w.raw("creationTimestamp", b"null");
            labels(w, wl, true);
            template_annotations(w, wl);
            w.arr("ownerReferences", |w| {
                w.el_obj(|w| {
                    w.str("apiVersion", "apps/v1");
                    w.str("kind", owner_kind);
                    w.str("name", &owner_name);
                    w.str("uid", &wl.owner_uid);
                    w.bool("controller", true);
                    w.bool("blockOwnerDeletion", true);
                });
            });
        });
        w.obj("spec", |w| write_pod_spec(w, wl, node));
        w.obj("status", |_| {});
    });
    buf
}

/// A Deployment as `kubectl apply` or a CI job sends it.
pub(crate) fn deployment(wl: &Workload, replicas: usize) -> Vec<u8> {
    let mut buf = Vec::with_capacity(6 * 1024);
    Jw::object(&mut buf, |w| {
        w.str("kind", "Deployment");
        w.str("apiVersion", "apps/v1");
        w.obj("metadata", |w| {
            w.str("name", wl.app);
            w.str("namespace", wl.ns);
            w.raw("creationTimestamp", b"null");
            labels(w, wl, false);
        });
        w.obj("spec", |w| {
            w.num("replicas", replicas as i64);
            w.obj("selector", |w| {
                w.obj("matchLabels", |w| w.str("app.kubernetes.io/name", wl.app));
            });
            w.obj("template", |w| {
                w.obj("metadata", |w| {
                    w.raw("creationTimestamp", b"null");
                    labels(w, wl, false);
                    template_annotations(w, wl);
                });
                w.obj("spec", |w| write_pod_spec(w, wl, None));
            });
            w.obj("strategy", |w| {
                w.str("type", "RollingUpdate");
                w.obj("rollingUpdate", |w| {
                    w.str("maxUnavailable", "25%");
                    w.str("maxSurge", "25%");
                });
            });
            w.num("revisionHistoryLimit", 10);
            w.num("progressDeadlineSeconds", 600);
        });
        w.obj("status", |_| {});
    });
    buf
}

/// The strategic-merge patch `kubectl set image` / a CI deploy step sends.
pub(crate) fn image_patch(wl: &Workload, image: &str, at: &str) -> Vec<u8> {
    let mut buf = Vec::with_capacity(256);
    Jw::object(&mut buf, |w| {
        w.obj("spec", |w| {
            w.obj("template", |w| {
                w.obj("metadata", |w| {
                    w.obj("annotations", |w| {
                        w.str("kubectl.kubernetes.io/restartedAt", at)
                    });
                });
                w.obj("spec", |w| {
                    w.arr("containers", |w| {
                        w.el_obj(|w| {
                            w.str(
                                "name",
                                if wl.kind == WorkloadKind::DaemonSet {
                                    wl.app
                                } else {
                                    "app"
                                },
                            );
                            w.str("image", image);
                        });
                    });
                });
            });
        });
    });
    buf
}

/// A build pod the GitLab runner's Kubernetes executor creates: helper and build containers, dozens of
/// `CI_*` variables.
pub(crate) fn ci_build_pod(rng: &mut Rand, name: &str, job: u64, project: u64) -> Vec<u8> {
    let sha = rng.hex(40);
    let mut buf = Vec::with_capacity(8 * 1024);
    let vars: Vec<(String, String)> = vec![
        ("CI".into(), "true".into()),
        ("GITLAB_CI".into(), "true".into()),
        ("CI_SERVER_URL".into(), "https://gitlab.example.com".into()),
        ("CI_SERVER_HOST".into(), "gitlab.example.com".into()),
        ("CI_SERVER_VERSION".into(), "16.11.2".into()),
        ("CI_JOB_ID".into(), job.to_string()),
        ("CI_JOB_NAME".into(), "deploy:production".into()),
        ("CI_JOB_STAGE".into(), "deploy".into()),
        (
            "CI_JOB_URL".into(),
            format!("https://gitlab.example.com/shop/services/-/jobs/{job}"),
        ),
        (
            "CI_JOB_IMAGE".into(),
            "registry.example.com/platform/deployer:v3.8.1".into(),
        ),
        ("CI_PIPELINE_ID".into(), (job / 7).to_string()),
        ("CI_PIPELINE_SOURCE".into(), "push".into()),
        (
            "CI_PIPELINE_URL".into(),
            format!(
                "https://gitlab.example.com/shop/services/-/pipelines/{}",
                job / 7
            ),
        ),
        ("CI_PROJECT_ID".into(), project.to_string()),
        ("CI_PROJECT_NAME".into(), "services".into()),
        ("CI_PROJECT_NAMESPACE".into(), "shop".into()),
        ("CI_PROJECT_PATH".into(), "shop/services".into()),
        (
            "CI_PROJECT_URL".into(),
            "https://gitlab.example.com/shop/services".into(),
        ),
        ("CI_PROJECT_DIR".into(), "/builds/shop/services".into()),
        (
            "CI_REPOSITORY_URL".into(),
            "https://gitlab-ci-token:[MASKED]@gitlab.example.com/shop/services.git".into(),
        ),
        ("CI_COMMIT_SHA".into(), sha.clone()),
        ("CI_COMMIT_SHORT_SHA".into(), sha[..8].to_string()),
        ("CI_COMMIT_REF_NAME".into(), "main".into()),
        ("CI_COMMIT_REF_SLUG".into(), "main".into()),
        ("CI_COMMIT_BRANCH".into(), "main".into()),
        (
            "CI_COMMIT_TITLE".into(),
            "payments: retry ledger writes on 503".into(),
        ),
        (
            "CI_COMMIT_AUTHOR".into(),
            "Alice Example <alice@example.com>".into(),
        ),
        ("CI_DEFAULT_BRANCH".into(), "main".into()),
        ("CI_REGISTRY".into(), "registry.example.com".into()),
        (
            "CI_REGISTRY_IMAGE".into(),
            "registry.example.com/shop/services".into(),
        ),
        ("CI_RUNNER_ID".into(), "42".into()),
        ("CI_RUNNER_DESCRIPTION".into(), "k8s-runner-prod".into()),
        (
            "CI_RUNNER_TAGS".into(),
            "[\"kubernetes\", \"deploy\"]".into(),
        ),
        ("CI_RUNNER_VERSION".into(), "16.11.0".into()),
        ("CI_CONCURRENT_ID".into(), "0".into()),
        ("CI_BUILDS_DIR".into(), "/builds".into()),
        ("GITLAB_USER_LOGIN".into(), "alice".into()),
        ("GITLAB_USER_EMAIL".into(), "alice@example.com".into()),
        ("GIT_DEPTH".into(), "20".into()),
        ("GIT_STRATEGY".into(), "fetch".into()),
        ("FF_USE_FASTZIP".into(), "true".into()),
        ("KUBE_NAMESPACE".into(), "production".into()),
        ("HELM_RELEASE".into(), "web-frontend".into()),
    ];
    Jw::object(&mut buf, |w| {
        w.str("kind", "Pod");
        w.str("apiVersion", "v1");
        w.obj("metadata", |w| {
            w.str("name", name);
            w.str("namespace", "ci");
            w.raw("creationTimestamp", b"null");
            w.obj("labels", |w| {
                w.str("job.runner.gitlab.com/id", &job.to_string());
                w.str("job.runner.gitlab.com/sha", &sha[..8]);
                w.str("project.runner.gitlab.com/id", &project.to_string());
                w.str("manager.runner.gitlab.com/name", "k8s-runner-prod");
                w.str("pod", name);
            });
            w.obj("annotations", |w| {
                w.str(
                    "job.runner.gitlab.com/url",
                    &format!("https://gitlab.example.com/shop/services/-/jobs/{job}"),
                );
                w.str("project.runner.gitlab.com/id", &project.to_string());
            });
        });
        w.obj("spec", |w| {
            w.arr("volumes", |w| {
                for name in ["repo", "scripts-52", "logs-52"] {
                    w.el_obj(|w| {
                        w.str("name", name);
                        w.obj("emptyDir", |_| {});
                    });
                }
            });
            w.arr("initContainers", |w| {
                w.el_obj(|w| {
                    w.str("name", "init-permissions");
                    w.str("image", "registry.gitlab.com/gitlab-org/gitlab-runner/gitlab-runner-helper:x86_64-v16.11.0");
                    w.strs("command", &["sh", "-c", "touch /logs-52/output.log && (chmod 777 /logs-52/output.log || exit 0)"]);
                    resources(w, "50m", "64Mi", "200m", "128Mi");
                    defaults(w);
                });
            });
            w.arr("containers", |w| {
                for (cname, image) in [
                    ("build", "registry.example.com/platform/deployer:v3.8.1"),
                    ("helper", "registry.gitlab.com/gitlab-org/gitlab-runner/gitlab-runner-helper:x86_64-v16.11.0"),
                ] {
                    w.el_obj(|w| {
                        w.str("name", cname);
                        w.str("image", image);
                        w.strs("command", &["sh", "-c", "if [ -x /usr/local/bin/bash ]; then\n\texec /usr/local/bin/bash \nelif [ -x /usr/bin/bash ]; then\n\texec /usr/bin/bash \nelse\n\texec sh \nfi\n"]);
                        w.arr("env", |w| {
                            for (k, v) in &vars {
                                w.el_obj(|w| {
                                    w.str("name", k);
                                    w.str("value", v);
                                });
                            }
                        });
                        resources(w, "500m", "512Mi", "2", "2Gi");
                        w.arr("volumeMounts", |w| {
                            for (n, p) in [("repo", "/builds"), ("scripts-52", "/scripts-52"), ("logs-52", "/logs-52")] {
                                w.el_obj(|w| {
                                    w.str("name", n);
                                    w.str("mountPath", p);
                                });
                            }
                        });
                        defaults(w);
                        w.bool("stdin", true);
                    });
                }
            });
            w.str("restartPolicy", "Never");
            w.str("serviceAccountName", "gitlab-runner-build");
            w.obj("nodeSelector", |w| w.str("kubernetes.io/os", "linux"));
            w.str("schedulerName", "default-scheduler");
        });
        w.obj("status", |_| {});
    });
    buf
}

/// A node's Lease renewal, as the kubelet (or a leader-election client) sends it.
pub(crate) fn lease(
    name: &str,
    ns: &str,
    uid: &str,
    rv: u64,
    holder: &str,
    duration: i64,
    renew: &str,
) -> Vec<u8> {
    let mut buf = Vec::with_capacity(512);
    Jw::object(&mut buf, |w| {
        w.str("kind", "Lease");
        w.str("apiVersion", "coordination.k8s.io/v1");
        w.obj("metadata", |w| {
            w.str("name", name);
            w.str("namespace", ns);
            w.str("uid", uid);
            w.str("resourceVersion", &rv.to_string());
            w.str("creationTimestamp", "2025-11-03T08:12:44Z");
        });
        w.obj("spec", |w| {
            w.str("holderIdentity", holder);
            w.num("leaseDurationSeconds", duration);
            w.str("renewTime", renew);
        });
    });
    buf
}

/// The kubelet's periodic `nodes/status` strategic-merge patch: condition heartbeats.
pub(crate) fn node_status_patch(at: &str) -> Vec<u8> {
    let mut buf = Vec::with_capacity(768);
    let conds = ["MemoryPressure", "DiskPressure", "PIDPressure", "Ready"];
    Jw::object(&mut buf, |w| {
        w.obj("status", |w| {
            w.arr("$setElementOrder/conditions", |w| {
                for c in conds {
                    w.el_obj(|w| w.str("type", c));
                }
            });
            w.arr("conditions", |w| {
                for c in conds {
                    w.el_obj(|w| {
                        w.str("lastHeartbeatTime", at);
                        w.str("type", c);
                    });
                }
            });
        });
    });
    buf
}

/// The kubelet's `pods/status` patch after a container starts.
pub(crate) fn pod_status_patch(uid: &str, ip: &str, at: &str) -> Vec<u8> {
    let mut buf = Vec::with_capacity(768);
    Jw::object(&mut buf, |w| {
        w.obj("metadata", |w| w.str("uid", uid));
        w.obj("status", |w| {
            w.arr("$setElementOrder/conditions", |w| {
                for c in [
                    "PodReadyToStartContainers",
                    "Initialized",
                    "Ready",
                    "ContainersReady",
                    "PodScheduled",
                ] {
                    w.el_obj(|w| w.str("type", c));
                }
            });
            w.arr("conditions", |w| {
                for c in ["Ready", "ContainersReady"] {
                    w.el_obj(|w| {
                        w.str("lastTransitionTime", at);
                        w.str("status", "True");
                        w.str("type", c);
                    });
                }
            });
            w.str("podIP", ip);
            w.arr("podIPs", |w| w.el_obj(|w| w.str("ip", ip)));
        });
    });
    buf
}

/// The scheduler's `pods/binding`.
pub(crate) fn binding(pod: &str, ns: &str, uid: &str, node: &str) -> Vec<u8> {
    let mut buf = Vec::with_capacity(256);
    Jw::object(&mut buf, |w| {
        w.str("kind", "Binding");
        w.str("apiVersion", "v1");
        w.obj("metadata", |w| {
            w.str("name", pod);
            w.str("namespace", ns);
            w.str("uid", uid);
            w.raw("creationTimestamp", b"null");
        });
        w.obj("target", |w| {
            w.str("kind", "Node");
            w.str("name", node);
        });
    });
    buf
}

/// A ClusterRoleBinding of `role` to one subject (`kind` User, Group or ServiceAccount).
pub(crate) fn cluster_role_binding(
    name: &str,
    role: &str,
    kind: &str,
    subject: &str,
    ns: &str,
) -> Vec<u8> {
    let mut buf = Vec::with_capacity(384);
    Jw::object(&mut buf, |w| {
        w.str("kind", "ClusterRoleBinding");
        w.str("apiVersion", "rbac.authorization.k8s.io/v1");
        w.obj("metadata", |w| {
            w.str("name", name);
            w.raw("creationTimestamp", b"null");
        });
        w.arr("subjects", |w| {
            w.el_obj(|w| {
                w.str("kind", kind);
                if kind != "ServiceAccount" {
                    w.str("apiGroup", "rbac.authorization.k8s.io");
                }
                w.str("name", subject);
                w.opt("namespace", ns);
            });
        });
        w.obj("roleRef", |w| {
            w.str("apiGroup", "rbac.authorization.k8s.io");
            w.str("kind", "ClusterRole");
            w.str("name", role);
        });
    });
    buf
}

/// What an attacker's pod asks for: the host's process namespace, network and root filesystem.
pub(crate) fn host_pod(name: &str, ns: &str, node: &str, image: &str, command: &[&str]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(1024);
    Jw::object(&mut buf, |w| {
        w.str("kind", "Pod");
        w.str("apiVersion", "v1");
        w.obj("metadata", |w| {
            w.str("name", name);
            w.str("namespace", ns);
            w.raw("creationTimestamp", b"null");
            w.obj("labels", |w| w.str("run", name));
        });
        w.obj("spec", |w| {
            w.arr("volumes", |w| {
                w.el_obj(|w| {
                    w.str("name", "host-root");
                    w.obj("hostPath", |w| {
                        w.str("path", "/");
                        w.str("type", "");
                    });
                });
            });
            w.arr("containers", |w| {
                w.el_obj(|w| {
                    w.str("name", name);
                    w.str("image", image);
                    w.strs("command", command);
                    w.obj("resources", |_| {});
                    w.arr("volumeMounts", |w| {
                        w.el_obj(|w| {
                            w.str("name", "host-root");
                            w.str("mountPath", "/host");
                        });
                    });
                    defaults(w);
                    w.obj("securityContext", |w| w.bool("privileged", true));
                    w.bool("stdin", true);
                    w.bool("tty", true);
                });
            });
            w.str("restartPolicy", "Never");
            w.str("nodeName", node);
            w.bool("hostNetwork", true);
            w.bool("hostPID", true);
            w.bool("hostIPC", true);
            w.arr("tolerations", |w| w.el_obj(|w| w.str("operator", "Exists")));
        });
        w.obj("status", |_| {});
    });
    buf
}

/// Small bodies given as JSON text (e.g. a SelfSubjectRulesReview), checked by the tests to be JSON.
pub(crate) fn literal(json: &str) -> Vec<u8> {
    json.as_bytes().to_vec()
}

/// The prod payments API's Deployment as the workload-tamper scenario writes and reads it: the manifest CI
/// deploys (one container, `payments-api`, its database password a literal env value), optionally as stored
/// (uid, resourceVersion, generation, status) and with a second, privileged container.
#[derive(Debug, Clone)]
pub(crate) struct PaymentsDeployment<'a> {
    pub ns: &'a str,
    pub name: &'a str,
    pub image: &'a str,
    pub replicas: i64,
    pub sidecar: Option<Sidecar<'a>>,
    pub stored: Option<Stored<'a>>,
}

/// A container added next to the application's.
#[derive(Debug, Clone)]
pub(crate) struct Sidecar<'a> {
    pub name: &'a str,
    pub image: &'a str,
    pub command: &'a [&'a str],
}

/// What kube-apiserver keeps of an object besides what was sent.
#[derive(Debug, Clone)]
pub(crate) struct Stored<'a> {
    pub uid: &'a str,
    pub resource_version: u64,
    pub generation: i64,
    pub created: &'a str,
    /// `deployment.kubernetes.io/revision`.
    pub revision: i64,
    /// The generation the deployment controller has seen last.
    pub observed_generation: i64,
    /// When the controller last reported progress, and the ReplicaSet it rolled out (`NAME-HASH`).
    pub progressed: &'a str,
    pub replica_set: &'a str,
}

/// The Deployment's database password, set as a literal in its manifest (kubetrail's collector redacts env
/// values under secret-like names).
pub(crate) const PAYMENTS_DB_PASSWORD: &str = "pay-Db!7qLw29xVz";

pub(crate) fn payments_deployment(d: &PaymentsDeployment<'_>) -> Vec<u8> {
    let mut buf = Vec::with_capacity(4 * 1024);
    let version = d.image.rsplit(':').next().unwrap_or("latest");
    let labels = |w: &mut Jw<'_>| {
        w.obj("labels", |w| {
            w.str("app.kubernetes.io/name", d.name);
            w.str("app.kubernetes.io/instance", d.name);
            w.str("app.kubernetes.io/part-of", "payments");
            w.str("app.kubernetes.io/version", version);
            w.str("team", "payments");
        });
    };
    Jw::object(&mut buf, |w| {
        w.str("kind", "Deployment");
        w.str("apiVersion", "apps/v1");
        w.obj("metadata", |w| {
            w.str("name", d.name);
            w.str("namespace", d.ns);
            match &d.stored {
                Some(s) => {
                    w.str("uid", s.uid);
                    w.str("resourceVersion", &s.resource_version.to_string());
                    w.num("generation", s.generation);
                    w.str("creationTimestamp", s.created);
                }
                None => w.raw("creationTimestamp", b"null"),
            }
            labels(w);
            if let Some(s) = &d.stored {
                w.obj("annotations", |w| {
                    w.str("deployment.kubernetes.io/revision", &s.revision.to_string());
                });
            }
        });
        w.obj("spec", |w| {
            w.num("replicas", d.replicas);
            w.obj("selector", |w| {
                w.obj("matchLabels", |w| w.str("app.kubernetes.io/name", d.name));
            });
            w.obj("template", |w| {
                w.obj("metadata", |w| {
                    w.raw("creationTimestamp", b"null");
                    w.obj("labels", |w| {
                        w.str("app.kubernetes.io/name", d.name);
                        w.str("app.kubernetes.io/version", version);
                    });
                    w.obj("annotations", |w| {
                        w.str("prometheus.io/scrape", "true");
                        w.str("prometheus.io/port", "9090");
                    });
                });
                w.obj("spec", |w| payments_pod_spec(w, d));
            });
            w.obj("strategy", |w| {
                w.str("type", "RollingUpdate");
                w.obj("rollingUpdate", |w| {
                    w.str("maxUnavailable", "25%");
                    w.str("maxSurge", "25%");
                });
            });
            w.num("revisionHistoryLimit", 10);
            w.num("progressDeadlineSeconds", 600);
        });
        w.obj("status", |w| {
            let Some(s) = &d.stored else { return };
            w.num("observedGeneration", s.observed_generation);
            for k in [
                "replicas",
                "updatedReplicas",
                "readyReplicas",
                "availableReplicas",
            ] {
                w.num(k, d.replicas);
            }
            w.arr("conditions", |w| {
                for (kind, reason, message, at) in [
                    (
                        "Available",
                        "MinimumReplicasAvailable",
                        "Deployment has minimum availability.".to_string(),
                        s.created,
                    ),
                    (
                        "Progressing",
                        "NewReplicaSetAvailable",
                        format!(
                            "ReplicaSet \"{}\" has successfully progressed.",
                            s.replica_set
                        ),
                        s.progressed,
                    ),
                ] {
                    w.el_obj(|w| {
                        w.str("type", kind);
                        w.str("status", "True");
                        w.str("lastUpdateTime", at);
                        w.str("lastTransitionTime", at);
                        w.str("reason", reason);
                        w.str("message", &message);
                    });
                }
            });
        });
    });
    buf
}

fn payments_pod_spec(w: &mut Jw<'_>, d: &PaymentsDeployment<'_>) {
    w.arr("volumes", |w| {
        w.el_obj(|w| {
            w.str("name", "config");
            w.obj("configMap", |w| {
                w.str("name", "payments-api-config");
                w.num("defaultMode", 420);
            });
        });
        w.el_obj(|w| {
            w.str("name", "tls");
            w.obj("secret", |w| {
                w.str("secretName", "payments-api-tls");
                w.num("defaultMode", 420);
            });
        });
        w.el_obj(|w| {
            w.str("name", "tmp");
            w.obj("emptyDir", |w| w.str("sizeLimit", "256Mi"));
        });
        if d.sidecar.is_some() {
            w.el_obj(|w| {
                w.str("name", "host-root");
                w.obj("hostPath", |w| {
                    w.str("path", "/");
                    w.str("type", "");
                });
            });
        }
    });
    w.arr("containers", |w| {
        w.el_obj(|w| {
            // The generator's own model of the workload names its container `app`.
            w.str("name", "app");
            w.str("image", d.image);
            w.strs("args", &["serve", "--config=/etc/payments/config.yaml"]);
            w.arr("ports", |w| {
                for (name, port) in [("http", 8080), ("metrics", 9090)] {
                    w.el_obj(|w| {
                        w.str("name", name);
                        w.num("containerPort", port);
                        w.str("protocol", "TCP");
                    });
                }
            });
            w.arr("env", |w| {
                for (name, value) in [
                    ("DB_HOST", "payments-db.prod-payments.svc.cluster.local"),
                    ("DB_PORT", "3306"),
                    ("DB_NAME", "payments"),
                    ("DB_USER", "payments_api"),
                    ("DB_PASSWORD", PAYMENTS_DB_PASSWORD),
                    ("LOG_LEVEL", "info"),
                    ("OTEL_SERVICE_NAME", "payments-api"),
                ] {
                    w.el_obj(|w| {
                        w.str("name", name);
                        w.str("value", value);
                    });
                }
                w.el_obj(|w| {
                    w.str("name", "STRIPE_API_KEY");
                    w.obj("valueFrom", |w| {
                        w.obj("secretKeyRef", |w| {
                            w.str("name", "stripe-api-key");
                            w.str("key", "api-key");
                        });
                    });
                });
                w.el_obj(|w| field_env(w, "POD_NAME", "metadata.name"));
            });
            resources(w, "500m", "512Mi", "1", "512Mi");
            w.arr("volumeMounts", |w| {
                for (name, path, ro) in [
                    ("config", "/etc/payments", true),
                    ("tls", "/var/run/secrets/payments-api-tls", true),
                    ("tmp", "/tmp", false),
                ] {
                    w.el_obj(|w| {
                        w.str("name", name);
                        w.str("mountPath", path);
                        if ro {
                            w.bool("readOnly", true);
                        }
                    });
                }
            });
            for (probe, path, delay) in [
                ("livenessProbe", "/healthz", 15),
                ("readinessProbe", "/readyz", 5),
            ] {
                w.obj(probe, |w| {
                    w.obj("httpGet", |w| {
                        w.str("path", path);
                        w.str("port", "http");
                        w.str("scheme", "HTTP");
                    });
                    w.num("initialDelaySeconds", delay);
                    w.num("timeoutSeconds", 2);
                    w.num("periodSeconds", 10);
                    w.num("successThreshold", 1);
                    w.num("failureThreshold", 3);
                });
            }
            defaults(w);
            restricted(w);
        });
        if let Some(s) = &d.sidecar {
            w.el_obj(|w| {
                w.str("name", s.name);
                w.str("image", s.image);
                w.strs("command", s.command);
                w.obj("resources", |_| {});
                w.arr("volumeMounts", |w| {
                    w.el_obj(|w| {
                        w.str("name", "host-root");
                        w.str("mountPath", "/host");
                    });
                });
                defaults(w);
                w.obj("securityContext", |w| w.bool("privileged", true));
            });
        }
    });
    w.str("restartPolicy", "Always");
    w.num("terminationGracePeriodSeconds", 30);
    w.str("dnsPolicy", "ClusterFirst");
    w.str("serviceAccountName", d.name);
    w.str("serviceAccount", d.name);
    w.obj("securityContext", |w| {
        w.num("runAsUser", 10001);
        w.num("runAsGroup", 10001);
        w.num("fsGroup", 10001);
        w.obj("seccompProfile", |w| w.str("type", "RuntimeDefault"));
    });
    w.str("schedulerName", "default-scheduler");
}

/// What kube-apiserver keeps of an RBAC object besides what was sent.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StoredMeta<'a> {
    pub uid: &'a str,
    pub resource_version: u64,
    pub created: &'a str,
}

fn rbac_metadata(w: &mut Jw<'_>, name: &str, ns: &str, stored: Option<StoredMeta<'_>>) {
    w.obj("metadata", |w| {
        w.str("name", name);
        w.opt("namespace", ns);
        match stored {
            Some(s) => {
                w.str("uid", s.uid);
                w.str("resourceVersion", &s.resource_version.to_string());
                w.str("creationTimestamp", s.created);
            }
            None => w.raw("creationTimestamp", b"null"),
        }
    });
}

/// A Role of one rule, as `kubectl create role NAME --verb=... --resource=...` sends it (and, `stored`, as
/// kept).
pub(crate) fn role(
    name: &str,
    ns: &str,
    verbs: &[&str],
    resources: &[&str],
    stored: Option<StoredMeta<'_>>,
) -> Vec<u8> {
    let mut buf = Vec::with_capacity(384);
    Jw::object(&mut buf, |w| {
        w.str("kind", "Role");
        w.str("apiVersion", "rbac.authorization.k8s.io/v1");
        rbac_metadata(w, name, ns, stored);
        w.arr("rules", |w| {
            w.el_obj(|w| {
                w.strs("verbs", verbs);
                w.strs("apiGroups", &[""]);
                w.strs("resources", resources);
            });
        });
    });
    buf
}

/// A RoleBinding of Role `role` to `subjects` ((kind, name) of Users and Groups).
pub(crate) fn role_binding(
    name: &str,
    ns: &str,
    role: &str,
    subjects: &[(&str, &str)],
    stored: Option<StoredMeta<'_>>,
) -> Vec<u8> {
    let mut buf = Vec::with_capacity(512);
    Jw::object(&mut buf, |w| {
        w.str("kind", "RoleBinding");
        w.str("apiVersion", "rbac.authorization.k8s.io/v1");
        rbac_metadata(w, name, ns, stored);
        subjects_field(w, subjects);
        w.obj("roleRef", |w| {
            w.str("apiGroup", "rbac.authorization.k8s.io");
            w.str("kind", "Role");
            w.str("name", role);
        });
    });
    buf
}

/// `kubectl patch --type merge` of a binding's subjects (a merge patch replaces the whole list).
pub(crate) fn subjects_patch(subjects: &[(&str, &str)]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(256);
    Jw::object(&mut buf, |w| subjects_field(w, subjects));
    buf
}

fn subjects_field(w: &mut Jw<'_>, subjects: &[(&str, &str)]) {
    w.arr("subjects", |w| {
        for (kind, name) in subjects {
            w.el_obj(|w| {
                w.str("kind", kind);
                w.str("apiGroup", "rbac.authorization.k8s.io");
                w.str("name", name);
            });
        }
    });
}

/// What `kubectl delete` sends.
pub(crate) fn delete_options(api_version: &str) -> Vec<u8> {
    format!(
        r#"{{"kind":"DeleteOptions","apiVersion":"{api_version}","propagationPolicy":"Background"}}"#
    )
    .into_bytes()
}

/// The Status a successful delete answers with.
pub(crate) fn deleted_status(name: &str, group: &str, kind: &str, uid: &str) -> Vec<u8> {
    let mut buf = Vec::with_capacity(256);
    Jw::object(&mut buf, |w| {
        w.str("kind", "Status");
        w.str("apiVersion", "v1");
        w.obj("metadata", |_| {});
        w.str("status", "Success");
        w.obj("details", |w| {
            w.str("name", name);
            w.str("group", group);
            w.str("kind", kind);
            w.str("uid", uid);
        });
    });
    buf
}
