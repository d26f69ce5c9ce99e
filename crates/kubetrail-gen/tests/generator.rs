//! The generator's promises, checked on its output as a consumer reads it (through kubetrail-model).

use std::collections::HashMap;

use kubetrail_gen::{Config, Generator};
use kubetrail_model::{Event, Stage};

fn cfg(seed: u64) -> Config {
    Config {
        seed,
        ..Config::default()
    }
}

fn lines(cfg: Config, n: usize) -> Vec<String> {
    Generator::new(cfg).take(n).collect()
}

/// The URL path kube-apiserver would have derived `objectRef` from.
fn path_of(ev: &Event<'_>) -> Option<String> {
    let o = ev.object_ref.as_ref()?;
    let mut p = if o.api_group.is_empty() {
        "/api/v1".to_string()
    } else {
        format!("/apis/{}/{}", o.api_group, o.api_version)
    };
    if !o.namespace.is_empty() {
        p += &format!("/namespaces/{}", o.namespace);
    }
    p += &format!("/{}", o.resource);
    let create_by_body = ev.verb == "create" && o.subresource.is_empty();
    if !o.name.is_empty() && !create_by_body {
        p += &format!("/{}", o.name);
    }
    if !o.subresource.is_empty() {
        p += &format!("/{}", o.subresource);
    }
    Some(p)
}

#[test]
fn same_seed_same_output_different_seed_different_output() {
    let a = lines(cfg(7), 3_000);
    let b = lines(cfg(7), 3_000);
    let c = lines(cfg(8), 3_000);
    assert_eq!(a, b);
    assert_ne!(a, c);
    let with_stages = Config {
        stages: true,
        attacks: true,
        ..cfg(7)
    };
    assert_eq!(lines(with_stages.clone(), 3_000), lines(with_stages, 3_000));
}

#[test]
fn next_into_matches_iterator() {
    let mut g = Generator::new(cfg(3));
    let mut buf = Vec::new();
    for line in lines(cfg(3), 500) {
        buf.clear();
        g.next_into(&mut buf);
        assert_eq!(buf, line.as_bytes());
    }
}

#[test]
fn every_line_parses_and_object_ref_matches_uri() {
    for config in [
        cfg(1),
        Config {
            attacks: true,
            stages: true,
            nodes: 3,
            ..cfg(2)
        },
    ] {
        for line in lines(config, 20_000) {
            let ev = Event::parse(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
            assert_eq!(ev.api_version.as_deref(), Some("audit.k8s.io/v1"));
            assert!(!line.contains('\n'));
            let path = ev.request_uri.split('?').next().unwrap();
            match path_of(&ev) {
                Some(expected) => {
                    let proxied = ev.object_ref.as_ref().unwrap().subresource == "proxy"
                        && path.starts_with(&(expected.clone() + "/"));
                    assert!(path == expected || proxied, "{expected} vs {line}");
                }
                None => assert!(
                    [
                        "/healthz",
                        "/livez",
                        "/readyz",
                        "/api",
                        "/apis",
                        "/version",
                        "/openapi/v2"
                    ]
                    .contains(&path)
                        || path.starts_with("/apis/metrics.k8s.io"),
                    "{line}"
                ),
            }
            let received = ev.received_at().unwrap();
            let stage_ts: jiff::Timestamp = ev.stage_timestamp.as_deref().unwrap().parse().unwrap();
            assert!(received <= stage_ts, "{line}");
            if ev.stage == Stage::RequestReceived {
                assert!(ev.response_status.is_none() && ev.annotations.is_none());
            } else {
                let ann = ev.annotations.as_ref().unwrap();
                let decision = ann["authorization.k8s.io/decision"].as_ref();
                assert_eq!(decision == "forbid", ev.code() == Some(403), "{line}");
            }
            if ev.verb == "watch" {
                assert!(ev.request_uri.contains("watch=true"), "{line}");
            }
            if let Some(obj) = ev.request_object {
                serde_json::from_str::<serde_json::Value>(obj.get()).unwrap();
            }
        }
    }
}

#[test]
fn stages_come_in_order_per_request() {
    let config = Config {
        stages: true,
        ..cfg(4)
    };
    let mut seen: HashMap<String, Vec<Stage>> = HashMap::new();
    for line in lines(config, 20_000) {
        let ev = Event::parse(&line).unwrap();
        seen.entry(ev.audit_id.to_string())
            .or_default()
            .push(ev.stage);
    }
    let (mut short, mut complete) = (0, 0);
    for (id, stages) in &seen {
        assert_eq!(stages[0], Stage::RequestReceived, "{id}");
        assert!(stages.windows(2).all(|w| w[0] < w[1]), "{id}: {stages:?}");
        // Watches stay open for minutes, past the end of the run; everything else completes in ms.
        if !stages.contains(&Stage::ResponseStarted) {
            short += 1;
            complete += usize::from(stages.contains(&Stage::ResponseComplete));
        }
    }
    assert!(complete * 100 > short * 99, "{complete} of {short}");
    assert!(short < seen.len());
}

#[test]
fn attacks_appear_only_when_asked_and_are_unlabelled() {
    let config = Config {
        attacks: true,
        ..cfg(5)
    };
    let mut g = Generator::new(config);
    let mut attack = Vec::new();
    for _ in 0..60_000 {
        let line = g.next().unwrap();
        assert!(!line.to_lowercase().contains("attack"), "{line}");
        if g.last_was_attack() {
            attack.push(line);
        }
    }
    assert_eq!(g.attack_lines() as usize, attack.len());
    assert!(
        !attack.is_empty() && attack.len() < 1_000,
        "{}",
        attack.len()
    );
    let has = |needle: &[&str]| attack.iter().any(|l| needle.iter().all(|n| l.contains(n)));
    assert!(has(&[
        r#""verb":"create""#,
        r#""resource":"clusterrolebindings""#,
        r#""name":"cluster-admin""#
    ]));
    assert!(has(&[
        r#""hostPID":true"#,
        r#""privileged":true"#,
        r#""hostPath""#
    ]));
    assert!(has(&[r#""subresource":"exec""#]));
    assert!(has(&[r#""subresource":"proxy""#]));
    assert!(has(&[r#""subresource":"token""#, "TokenRequest"]));
    assert!(has(&["impersonatedUser", "system:masters"]));
    assert!(has(&["system:anonymous", r#""code":403"#]));
    assert!(has(&[r#""requestURI":"/api/v1/secrets?"#]));
    let forbidden = attack
        .iter()
        .filter(|l| l.contains(r#""code":403"#))
        .count();
    assert!(forbidden >= 20, "{forbidden}");

    let normal = lines(cfg(5), 60_000);
    assert!(!normal.iter().any(|l| l.contains("impersonatedUser")));
    assert!(
        !normal
            .iter()
            .any(|l| l.contains(r#""resource":"clusterrolebindings","name""#))
    );
}

fn user_class(name: &str) -> &'static str {
    match name {
        "system:kube-controller-manager" => "controller-manager",
        "system:kube-scheduler" => "scheduler",
        "system:apiserver" => "apiserver",
        "system:anonymous" => "anonymous",
        n if n.starts_with("system:node:") => "kubelets",
        n if n.starts_with("system:serviceaccount:") => "service accounts",
        _ => "humans",
    }
}

#[test]
fn controller_manager_watch_is_the_noisiest_group() {
    let n = 50_000;
    let mut groups: HashMap<(String, String, String), usize> = HashMap::new();
    let mut classes: HashMap<&str, usize> = HashMap::new();
    let mut bytes = 0;
    for line in lines(cfg(6), n) {
        bytes += line.len() + 1;
        let ev = Event::parse(&line).unwrap();
        let a = ev.attributes();
        let user = a.user.unwrap_or("").to_string();
        *classes.entry(user_class(&user)).or_default() += 1;
        *groups
            .entry((user, a.verb.to_string(), a.resource.to_string()))
            .or_default() += 1;
    }
    let mut ranked: Vec<_> = groups.into_iter().collect();
    ranked.sort_by_key(|g| std::cmp::Reverse(g.1));
    let ((user, verb, resource), count) = &ranked[0];
    assert_eq!(
        (user.as_str(), verb.as_str()),
        ("system:kube-controller-manager", "watch"),
        "{ranked:?}"
    );
    assert_eq!(resource, "pods");
    assert!(*count * 10 > n, "{count}");
    let mut shares: Vec<_> = classes.into_iter().collect();
    shares.sort_by_key(|c| std::cmp::Reverse(c.1));
    let shares: Vec<String> = shares
        .iter()
        .map(|(c, k)| format!("{c} {:.1}%", *k as f64 * 100.0 / n as f64))
        .collect();
    eprintln!("share by user group: {}", shares.join(", "));
    eprintln!("average event size: {} bytes", bytes / n);
    assert!((900..=1_600).contains(&(bytes / n)), "{}", bytes / n);
}

#[test]
fn pod_creates_carry_realistic_specs() {
    let mut sizes = Vec::new();
    for line in lines(cfg(9), 40_000) {
        let ev = Event::parse(&line).unwrap();
        let Some(o) = &ev.object_ref else { continue };
        if ev.verb == "create" && o.resource == "pods" && o.subresource.is_empty() {
            let obj = ev.request_object.expect("pod create logs its body");
            let pod: serde_json::Value = serde_json::from_str(obj.get()).unwrap();
            assert_eq!(pod["kind"], "Pod");
            assert!(pod["spec"]["containers"][0]["image"].is_string());
            sizes.push(obj.get().len());
        }
    }
    assert!(sizes.len() > 200, "{}", sizes.len());
    let avg = sizes.iter().sum::<usize>() / sizes.len();
    eprintln!(
        "pod creates: {}, average body {avg} bytes, min {}, max {}",
        sizes.len(),
        sizes.iter().min().unwrap(),
        sizes.iter().max().unwrap()
    );
    assert!((2_048..=10_240).contains(&avg), "{avg}");
    assert!(
        sizes.iter().all(|s| (1_500..=12_000).contains(s)),
        "{sizes:?}"
    );
}

#[test]
fn timestamps_increase_and_span_count_over_rate() {
    for (rate, n) in [(100.0, 20_000), (4_000.0, 40_000)] {
        let config = Config { rate, ..cfg(10) };
        let start = config.start;
        let mut last = start;
        let mut first = None;
        for line in lines(config, n) {
            let ev = Event::parse(&line).unwrap();
            let t: jiff::Timestamp = ev.stage_timestamp.as_deref().unwrap().parse().unwrap();
            assert!(t >= last, "{t} < {last}");
            assert!(ev.received_at().unwrap() >= start);
            first.get_or_insert(t);
            last = t;
        }
        let span = last.duration_since(first.unwrap()).as_secs_f64();
        let expected = n as f64 / rate;
        assert!((span / expected - 1.0).abs() < 0.05, "{span} vs {expected}");
    }
}

#[test]
fn metadata_only_writes_no_bodies() {
    let full = lines(cfg(5), 5_000);
    let meta = lines(
        Config {
            metadata_only: true,
            ..cfg(5)
        },
        5_000,
    );
    for line in &meta {
        let ev = Event::parse(line).unwrap();
        assert_eq!(ev.level.as_str(), "Metadata", "{line}");
        assert!(
            ev.request_object.is_none() && ev.response_object.is_none(),
            "{line}"
        );
    }
    let avg = |l: &[String]| l.iter().map(String::len).sum::<usize>() / l.len();
    assert!(full.iter().any(|l| l.contains("\"requestObject\"")));
    assert!(
        avg(&meta) * 10 < avg(&full) * 8,
        "{} against {}",
        avg(&meta),
        avg(&full)
    );
}

/// Quiet nights: between 00:00 and 06:00 UTC a quarter of the events, and people's requests all but gone;
/// the control plane and nodes go on.
#[test]
fn nights_are_quiet_for_people_not_for_the_control_plane() {
    let start = jiff::Timestamp::from_second(1_767_225_600).unwrap(); // 2026-01-01T00:00:00Z
    let events: Vec<String> = Generator::new(Config {
        rate: 2.0,
        start,
        nights: true,
        ..Config::default()
    })
    .take(120_000)
    .collect();
    let (mut night, mut day, mut night_people, mut day_people, mut night_nodes) = (0, 0, 0, 0, 0);
    for l in &events {
        let e = Event::parse(l).unwrap();
        let hour = e
            .received_at()
            .unwrap()
            .as_second()
            .div_euclid(3600)
            .rem_euclid(24);
        let person = kubetrail_detect_class(&e.user.username);
        let is_night = hour < 6;
        if is_night {
            night += 1;
            night_people += usize::from(person);
            night_nodes += usize::from(e.user.username.starts_with("system:node:"));
        } else {
            day += 1;
            day_people += usize::from(person);
        }
    }
    // Six hours of night against eighteen of day, at a quarter of the rate: about a twelfth of the events.
    let share = night as f64 / (night + day) as f64;
    assert!((0.05..0.12).contains(&share), "{share}");
    let (np, dp) = (
        night_people as f64 / night as f64,
        day_people as f64 / day as f64,
    );
    assert!(np < dp / 5.0, "people at night {np} vs by day {dp}");
    assert!(night_nodes as f64 / night as f64 > 0.1, "kubelets go on");
}

/// A person or CI (not `system:` and not a service account).
fn kubetrail_detect_class(user: &str) -> bool {
    !user.starts_with("system:")
}
