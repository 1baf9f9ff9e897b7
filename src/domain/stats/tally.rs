//! What the facts of one time slot and group add up to: counts, sums, minima, maxima and
//! sketches, all of which merge exactly, so a bucket of any length is the merge of the
//! slots it covers. Durations are kept in whole microseconds (the stores' precision), so
//! that sums do not depend on the order of addition.

use super::facts::{Fact, Measure};
use super::sketch::Sketch;
use crate::domain::{Anomaly, HopKind};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Durations: how many, their sum, least and greatest, and their distribution.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Durations {
    pub count: u64,
    pub sum_micros: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_micros: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_micros: Option<i64>,
    #[serde(default)]
    pub sketch: Sketch,
}

fn is_zero(count: &u64) -> bool {
    *count == 0
}

impl Durations {
    pub fn add(&mut self, micros: i64) {
        self.count += 1;
        self.sum_micros += micros;
        self.min_micros = Some(self.min_micros.map_or(micros, |min| min.min(micros)));
        self.max_micros = Some(self.max_micros.map_or(micros, |max| max.max(micros)));
        self.sketch.add(seconds(micros));
    }

    pub fn merge(&mut self, other: &Durations) {
        self.count += other.count;
        self.sum_micros += other.sum_micros;
        self.min_micros = lesser(self.min_micros, other.min_micros);
        self.max_micros = greater(self.max_micros, other.max_micros);
        self.sketch.merge(&other.sketch);
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The nearest-rank `q`-quantile in seconds, within 1 %.
    pub fn quantile_seconds(&self, q: f64) -> Option<f64> {
        let (min, max) = (self.min_micros?, self.max_micros?);
        self.sketch.quantile(q, seconds(min), seconds(max))
    }
}

pub fn seconds(micros: i64) -> f64 {
    micros as f64 / 1e6
}

fn lesser(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn greater(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// Everything SPEC 11.1 counts, for one slot (or bucket) and group.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    #[serde(default, skip_serializing_if = "is_zero")]
    pub started: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ended: u64,
    #[serde(default, skip_serializing_if = "Durations::is_empty")]
    pub stints: Durations,
    #[serde(default, skip_serializing_if = "Durations::is_empty")]
    pub first_agent: Durations,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cold: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub warm: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub redial: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub escalated: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub completed: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failed: u64,
    /// Hops to the group's participant (or queue).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub hops_in: u64,
    /// Hops from the group's participant (or queue).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub hops_out: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub anomalies: BTreeMap<Anomaly, u64>,
}

impl Tally {
    /// Counts one fact (a stint's `handled` mark is counted apart; see `Handled`).
    pub fn add(&mut self, fact: &Fact) {
        match &fact.measure {
            Measure::Started => self.started += 1,
            Measure::Ended => self.ended += 1,
            Measure::Stint { micros, .. } => self.stints.add(*micros),
            Measure::FirstAgent { micros } => self.first_agent.add(*micros),
            Measure::Hop { kind } => {
                self.hops_out += 1;
                match kind {
                    HopKind::Cold => self.cold += 1,
                    HopKind::Warm => self.warm += 1,
                    HopKind::Redial => self.redial += 1,
                    HopKind::Escalation => self.escalated += 1,
                }
            }
            Measure::HopIn => self.hops_in += 1,
            Measure::Outcome { completed: true } => self.completed += 1,
            Measure::Outcome { completed: false } => self.failed += 1,
            Measure::Anomaly(code) => *self.anomalies.entry(*code).or_default() += 1,
        }
    }

    pub fn merge(&mut self, other: &Tally) {
        self.started += other.started;
        self.ended += other.ended;
        self.stints.merge(&other.stints);
        self.first_agent.merge(&other.first_agent);
        self.cold += other.cold;
        self.warm += other.warm;
        self.redial += other.redial;
        self.escalated += other.escalated;
        self.completed += other.completed;
        self.failed += other.failed;
        self.hops_in += other.hops_in;
        self.hops_out += other.hops_out;
        for (code, count) in &other.anomalies {
            *self.anomalies.entry(*code).or_default() += count;
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == Tally::default()
    }
}
