//! A simulated app for the limiter's tests: `workers` threads serving a FIFO queue, each
//! request taking its service time of one thread, behind a hop that adds `hop` each way;
//! callers arrive open-loop (evenly spaced, as `make bench` drives, or at random) and give
//! up after a deadline, while the app still does the work. Time is simulated, so a run
//! of minutes takes milliseconds and gives the same answer every time.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::limiter::{Latencies, Limiter, Sample, admits};

/// An app and the load on it.
#[derive(Clone, Copy, Debug)]
pub struct Plant {
    /// Threads serving requests.
    pub workers: usize,
    /// One request's CPU time, in seconds (each request varies by up to ±`jitter` of it).
    pub service: f64,
    pub jitter: f64,
    /// A share of requests that take `slow_factor` times as long (an app whose requests
    /// differ in cost); 0 for none.
    pub slow_share: f64,
    pub slow_factor: f64,
    /// The proxy-to-app hop, each way, in seconds.
    pub hop: f64,
}

impl Plant {
    /// Requests a second the app serves flat out (its mean service time).
    pub fn capacity(&self) -> f64 {
        let mean = self.service * (1.0 - self.slow_share + self.slow_share * self.slow_factor);
        self.workers as f64 / mean
    }
}

/// How callers arrive.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Arrivals {
    Even,
    Random,
}

/// What protection is on.
#[derive(Clone, Copy, Debug)]
pub enum Protection {
    Off,
    /// The limiter with the CPU signal (a share of the app's threads) or the latency
    /// signal (p99 seconds).
    Cpu(f64),
    Latency(f64),
}

/// One phase of load: a rate for a time.
#[derive(Clone, Copy, Debug)]
pub struct Phase {
    pub rate: f64,
    pub secs: f64,
}

/// What a run measured per phase (after its first `settle` seconds).
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// Answers within the deadline, per second.
    pub goodput: f64,
    /// The p99 of admitted requests' latencies, in seconds.
    pub p99: f64,
    /// Requests shed, per second.
    pub shed: f64,
    /// The limit after each period (`None`: no limit).
    pub limits: Vec<Option<f64>>,
}

/// Callers give up after this long.
pub const DEADLINE: f64 = 1.0;
/// The sample period.
pub const PERIOD: f64 = 0.25;

struct Done {
    /// When the caller has the answer.
    at: f64,
    latency: f64,
    generation: u64,
    /// When the app worked on it.
    busy: (f64, f64),
}

/// Runs `phases` against `plant`, measuring each phase after its first `settle` seconds.
pub fn run(
    plant: Plant,
    arrivals: Arrivals,
    protection: Protection,
    phases: &[Phase],
    settle: f64,
    seed: u64,
) -> Vec<Outcome> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut limiter = match protection {
        Protection::Off => None,
        Protection::Cpu(t) => Some(Limiter::new(super::limiter::Signal::Cpu, t, 1, None)),
        Protection::Latency(t) => Some(Limiter::new(super::limiter::Signal::Latency, t, 1, None)),
    };
    let mut limit: Option<f64> = None;
    let mut generation = 0u64;
    // Threads' next free times.
    let mut free: BinaryHeap<Reverse<u64>> = (0..plant.workers).map(|_| Reverse(0)).collect();
    let mut in_flight: BinaryHeap<Reverse<u64>> = BinaryHeap::new();
    let mut done: Vec<Done> = Vec::new();
    let (mut shed, mut peak) = (0u64, 0u64);
    let mut outcomes = Vec::new();
    let mut t = 0.0;
    let mut next_period = PERIOD;
    let us = |s: f64| (s * 1e6) as u64;
    for phase in phases {
        let (start, end) = (t, t + phase.secs);
        let measured_from = start + settle;
        let mut out = Outcome::default();
        let (mut ok, mut shed_counted, mut latencies) = (0u64, 0u64, Vec::new());
        loop {
            let gap = match arrivals {
                Arrivals::Even => 1.0 / phase.rate,
                Arrivals::Random => -(1.0 - rng.f64()).ln() / phase.rate,
            };
            t += gap;
            // Period boundaries before this arrival: sample and decide.
            while next_period <= t.min(end) {
                let from = next_period - PERIOD;
                let mut lat: Vec<f64> = Vec::new();
                let mut busy = 0.0;
                for d in &done {
                    if d.at > from && d.at <= next_period && d.generation == generation {
                        lat.push(d.latency);
                    }
                    busy += (d.busy.1.min(next_period) - d.busy.0.max(from)).max(0.0);
                }
                done.retain(|d| d.at > next_period || d.busy.1 > next_period);
                lat.sort_by(f64::total_cmp);
                let latency = (!lat.is_empty()).then(|| Latencies {
                    p50: lat[lat.len() / 2],
                    p99: lat[((lat.len() as f64 * 0.99).ceil() as usize).min(lat.len()) - 1],
                    count: lat.len() as u64,
                });
                let cpu = busy / (PERIOD * plant.workers as f64);
                while in_flight
                    .peek()
                    .is_some_and(|Reverse(a)| *a <= us(next_period))
                {
                    in_flight.pop();
                }
                if let Some(l) = limiter.as_mut() {
                    let signal = match protection {
                        Protection::Cpu(_) => Some(cpu),
                        Protection::Latency(_) => latency.map(|l| l.p99),
                        Protection::Off => None,
                    };
                    let decision = l.update(&Sample {
                        signal,
                        latency,
                        peak_in_flight: peak,
                        shed,
                    });
                    limit = decision.limit;
                    if decision.probe {
                        generation += 1;
                    }
                }
                if next_period > measured_from {
                    out.limits.push(limit);
                }
                peak = in_flight.len() as u64;
                shed = 0;
                next_period += PERIOD;
            }
            if t >= end {
                t = end;
                break;
            }
            while in_flight.peek().is_some_and(|Reverse(a)| *a <= us(t)) {
                in_flight.pop();
            }
            let counted = t >= measured_from;
            if limit.is_some_and(|l| !admits(in_flight.len() as u64, l, rng.f64())) {
                shed += 1;
                shed_counted += u64::from(counted);
                continue;
            }
            let mut service = plant.service * (1.0 + plant.jitter * (2.0 * rng.f64() - 1.0));
            if rng.f64() < plant.slow_share {
                service *= plant.slow_factor;
            }
            let Reverse(free_at) = free.pop().unwrap_or(Reverse(0));
            let begin = (t + plant.hop).max(free_at as f64 / 1e6);
            let finish = begin + service;
            free.push(Reverse(us(finish)));
            let answered = finish + plant.hop;
            in_flight.push(Reverse(us(answered)));
            peak = peak.max(in_flight.len() as u64);
            let latency = answered - t;
            done.push(Done {
                at: answered,
                latency,
                generation,
                busy: (begin, finish),
            });
            if counted {
                latencies.push(latency);
                ok += u64::from(latency <= DEADLINE);
            }
        }
        let secs = end - measured_from;
        latencies.sort_by(f64::total_cmp);
        out.goodput = ok as f64 / secs;
        out.shed = shed_counted as f64 / secs;
        out.p99 = latencies
            .get(((latencies.len() as f64 * 0.99) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0.0);
        outcomes.push(out);
    }
    outcomes
}
