//! A deterministic (seeded) generator of realistic kube-apiserver audit traffic, for load tests,
//! benchmarks, policy simulation and detection tests.
//!
//! Owns the model of a simulated cluster (nodes, control plane, workloads, operators, CI, people) and the
//! rendering of its requests as `audit.k8s.io/v1` Event JSON lines. The same [`Config`] always yields the
//! same bytes. Owns no IO: the caller writes the lines where it wants them.
//!
//! The mix follows measured clusters: the controller-manager's informers (its watch on pods is the single
//! largest user+verb+resource group), kubelets' leases and status, the scheduler, operators' watches, CI,
//! kubectl users, health probes, some 403s and 404s. With [`Config::attacks`] on, attack scenarios are
//! interleaved (one every few thousand events); the events carry no label, and
//! [`Generator::last_was_attack`] tells which lines they are. [`rbac_snapshot`] gives the RBAC objects of the
//! simulated cluster at [`Config::start`], which every `allow` reason of the traffic agrees with.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

pub mod access_grant;
mod attacks;
mod cluster;
pub mod cut;
mod event;
mod json;
mod objects;
mod rbac;
mod rng;
mod time;
mod traffic;

use event::{Req, Stage};
pub use rbac::rbac_snapshot;
use rng::Rand;

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Nodes in the simulated cluster (1 to 40,000); the kubelet and DaemonSet traffic scales with it.
    pub nodes: u32,
    /// Events per second, on average (exponential inter-arrival times): N events span about N/rate seconds.
    pub rate: f64,
    pub seed: u64,
    /// When the first event happens.
    pub start: jiff::Timestamp,
    /// Interleave attack scenarios with the everyday traffic.
    pub attacks: bool,
    /// Also emit RequestReceived before ResponseComplete, and ResponseStarted for long-running requests
    /// (watch, exec, attach, port-forward, logs, proxy), as an apiserver without `omitStages` does.
    pub stages: bool,
    /// Audit every request at Metadata, as a policy of only `level: Metadata` does: no request or response
    /// bodies (events of ~1,000 bytes instead of ~1,300).
    pub metadata_only: bool,
    /// Quiet nights: from 00:00 to 06:00 UTC the rate falls to a quarter and people, CI and the pods they
    /// create all but stop, while the control plane, nodes and operators go on (a real cluster's night).
    pub nights: bool,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            nodes: 50,
            rate: 100.0,
            seed: 1,
            start: jiff::Timestamp::from_second(1_767_225_600)
                .unwrap_or(jiff::Timestamp::UNIX_EPOCH),
            attacks: false,
            stages: false,
            metadata_only: false,
            nights: false,
        }
    }
}

/// Whether `us` (since the epoch) falls between 00:00 and 06:00 UTC.
fn is_night(us: i64) -> bool {
    us.div_euclid(3_600_000_000).rem_euclid(24) < 6
}

/// A request waiting for its next stage (or an attack step or follow-up waiting for its time).
#[derive(Debug)]
struct Pending {
    due_us: i64,
    seq: u64,
    stage: Stage,
    req: Box<Req>,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Pending) -> bool {
        (self.due_us, self.seq) == (other.due_us, other.seq)
    }
}

impl Eq for Pending {}

impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Pending) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Pending {
    /// Reversed, so the max-heap pops the earliest (ties by insertion order).
    fn cmp(&self, other: &Pending) -> Ordering {
        (other.due_us, other.seq).cmp(&(self.due_us, self.seq))
    }
}

/// The audit event stream of one simulated cluster: an endless iterator of JSON lines (without newline).
///
/// Each line's `stageTimestamp` is its place on the clock (non-decreasing); a request's
/// `requestReceivedTimestamp` is earlier by its latency (minutes, for watches).
#[derive(Debug)]
pub struct Generator {
    cfg: Config,
    rng: Rand,
    attack_rng: Rand,
    cluster: cluster::Cluster,
    start_us: i64,
    /// Microseconds since `start`, as f64 so that sub-microsecond gaps at high rates add up.
    clock: f64,
    mean_gap_us: f64,
    pending: BinaryHeap<Pending>,
    /// Requests (and their later stages) of the scenarios whose lines come on top of the traffic's
    /// ([`attacks::Slow::extra`]): each is written at its time, between two of the traffic's lines.
    extra: BinaryHeap<Pending>,
    /// The traffic's next place on the clock, drawn before an extra line was written in front of it.
    slot: Option<(i64, bool)>,
    follow: Vec<(i64, Req)>,
    seq: u64,
    lines: u64,
    /// Lines other than extra ones: what places the attack scenarios.
    slot_lines: u64,
    attack_lines: u64,
    last_attack: bool,
    next_attack_at: u64,
    scenario: usize,
    scenario_order: Vec<attacks::Scenario>,
    /// The draws of each of [`attacks::SLOW_SCENARIOS`].
    slow_rngs: Vec<Rand>,
    /// The stage delays of extra lines.
    extra_rng: Rand,
}

impl Generator {
    /// # Panics
    /// If `cfg.rate` is not a positive finite number.
    pub fn new(cfg: Config) -> Generator {
        assert!(
            cfg.rate.is_finite() && cfg.rate > 0.0,
            "rate must be a positive number of events per second"
        );
        let mut rng = Rand::new(cfg.seed, 0);
        let mut attack_rng = Rand::new(cfg.seed, 1);
        let cluster = cluster::Cluster::new(&mut rng, cfg.nodes);
        let mut scenario_order = attacks::SCENARIOS.to_vec();
        for i in (1..scenario_order.len()).rev() {
            scenario_order.swap(i, attack_rng.below(i + 1));
        }
        let next_attack_at = attack_rng.range(200, 1_500);
        let slow_rngs = attacks::SLOW_SCENARIOS
            .iter()
            .map(|s| Rand::new(cfg.seed, s.stream))
            .collect();
        let extra_rng = Rand::new(cfg.seed, 5);
        Generator {
            start_us: cfg.start.as_microsecond(),
            mean_gap_us: 1e6 / cfg.rate,
            cfg,
            rng,
            attack_rng,
            cluster,
            clock: 0.0,
            pending: BinaryHeap::new(),
            extra: BinaryHeap::new(),
            slot: None,
            follow: Vec::new(),
            seq: 0,
            lines: 0,
            slot_lines: 0,
            attack_lines: 0,
            last_attack: false,
            next_attack_at,
            scenario: 0,
            scenario_order,
            slow_rngs,
            extra_rng,
        }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Whether the line produced last belongs to an injected attack scenario.
    pub fn last_was_attack(&self) -> bool {
        self.last_attack
    }

    /// Lines produced so far that belong to attack scenarios.
    pub fn attack_lines(&self) -> u64 {
        self.attack_lines
    }

    /// Lines produced so far.
    pub fn lines(&self) -> u64 {
        self.lines
    }

    fn first_stage(&self) -> Stage {
        if self.cfg.stages {
            Stage::RequestReceived
        } else {
            Stage::ResponseComplete
        }
    }

    fn push(&mut self, due_us: i64, stage: Stage, req: Box<Req>, extra: bool) {
        self.seq += 1;
        let p = Pending {
            due_us,
            seq: self.seq,
            stage,
            req,
        };
        if extra {
            self.extra.push(p);
        } else {
            self.pending.push(p);
        }
    }

    /// Appends the next event (one JSON object, no newline) to `buf`.
    pub fn next_into(&mut self, buf: &mut Vec<u8>) {
        let (now, night) = match self.slot.take() {
            Some(slot) => slot,
            None => {
                let night = self.cfg.nights && is_night(self.start_us + self.clock as i64);
                let gap = if night {
                    4.0 * self.mean_gap_us
                } else {
                    self.mean_gap_us
                };
                self.clock += self.rng.exp(gap);
                let now = self.start_us + self.clock as i64;
                if self.cfg.attacks && self.slot_lines >= self.next_attack_at {
                    self.start_scenario(now);
                }
                (now, night)
            }
        };
        // An extra line due by the traffic's next place goes first, at its own time (after the line before,
        // which was at or before the traffic's last place); the traffic's line waits for the next call.
        if self.extra.peek().is_some_and(|p| p.due_us <= now) {
            let p = self.extra.pop().expect("peeked");
            self.slot = Some((now, night));
            self.emit(p.req, p.stage, p.due_us, buf, true);
            return;
        }
        let (req, stage) = match self.pending.peek() {
            Some(p) if p.due_us <= now => {
                let p = self.pending.pop().expect("peeked");
                (p.req, p.stage)
            }
            _ => {
                let mut ctx = traffic::Ctx {
                    rng: &mut self.rng,
                    c: &mut self.cluster,
                    now,
                    follow: &mut self.follow,
                    night,
                };
                let req = traffic::next(&mut ctx);
                let first = self.first_stage();
                for (delay, f) in std::mem::take(&mut self.follow) {
                    self.push(now + delay, first, Box::new(f), false);
                }
                (Box::new(req), first)
            }
        };
        self.emit(req, stage, now, buf, false);
    }

    fn start_scenario(&mut self, now: i64) {
        let n = self.scenario_order.len();
        let rate = self.cfg.rate;
        if self.scenario.is_multiple_of(n) {
            for (i, slow) in attacks::SLOW_SCENARIOS.iter().enumerate() {
                let rng = &mut self.slow_rngs[i];
                let steps = attacks::steps(slow.scenario, rng, &mut self.cluster, now, rate);
                self.schedule(now, steps, slow.extra);
            }
        }
        let s = self.scenario_order[self.scenario % n];
        self.scenario += 1;
        let steps = attacks::steps(s, &mut self.attack_rng, &mut self.cluster, now, rate);
        self.schedule(now, steps, false);
        self.next_attack_at = self.slot_lines + self.attack_rng.range(1_500, 4_500);
    }

    /// Queues a scenario's steps, started at `now`.
    fn schedule(&mut self, now: i64, steps: Vec<(i64, Req)>, extra: bool) {
        let first = self.first_stage();
        for (delay, req) in steps {
            // A step's delay is when kube-apiserver receives it. Its first line is RequestReceived then, or
            // (stages off) ResponseComplete, its latency later: an exec session of minutes starts after the
            // step before it either way.
            let due = match first {
                Stage::RequestReceived => now + delay,
                _ => now + delay + req.latency_us,
            };
            self.push(due, first, Box::new(req), extra);
        }
    }

    fn emit(&mut self, mut req: Box<Req>, stage: Stage, now: i64, buf: &mut Vec<u8>, extra: bool) {
        if self.cfg.metadata_only {
            req.level = event::Level::Metadata;
            req.request_object = None;
            req.response_object = None;
        }
        let received = *req.received_us.get_or_insert(match stage {
            Stage::RequestReceived => now,
            _ => (now - req.latency_us).max(self.start_us),
        });
        req.render(buf, stage, now);
        self.lines += 1;
        self.slot_lines += u64::from(!extra);
        self.last_attack = req.attack;
        self.attack_lines += u64::from(req.attack);
        if !self.cfg.stages {
            return;
        }
        match stage {
            Stage::RequestReceived if req.long_running && req.code < 400 => {
                let rng = if extra {
                    &mut self.extra_rng
                } else {
                    &mut self.rng
                };
                let started = now + 300 + rng.below(2_000) as i64;
                self.push(started, Stage::ResponseStarted, req, extra);
            }
            Stage::RequestReceived | Stage::ResponseStarted => {
                let done = (received + req.latency_us).max(now + 1);
                self.push(done, Stage::ResponseComplete, req, extra);
            }
            Stage::ResponseComplete => {}
        }
    }
}

impl Iterator for Generator {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        let mut buf = Vec::with_capacity(1536);
        self.next_into(&mut buf);
        // The writer only ever writes UTF-8 (str slices and ASCII).
        Some(String::from_utf8(buf).unwrap_or_default())
    }
}
