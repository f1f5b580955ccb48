//! The side-by-side report: a Markdown table (Courier, BullMQ, their ratio, and the SPEC 8
//! target Courier is held to) and the same figures as JSON.

use std::fmt::Write as _;

use serde::Serialize;
use serde_json::{Value, json};

use crate::{scenarios::Size, systems::System};

/// Which way a figure is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    Higher,
    Lower,
}

/// One measured figure of one scenario on one system.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub name: String,
    pub value: f64,
    pub better: Better,
    /// SPEC 8's bound for Courier, if it sets one.
    pub target: Option<f64>,
}

impl Figure {
    pub fn new(name: &str, value: f64, better: Better) -> Self {
        Self {
            name: name.into(),
            value,
            better,
            target: None,
        }
    }

    pub fn target(mut self, bound: f64) -> Self {
        self.target = Some(bound);
        self
    }
}

/// A row of the table: one figure of one scenario, on both systems.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub scenario: String,
    pub figure: String,
    pub better: Better,
    pub courier: Option<f64>,
    pub bullmq: Option<f64>,
    pub target: Option<f64>,
}

impl Row {
    /// How many times better Courier is than BullMQ (above 1: better).
    pub fn advantage(&self) -> Option<f64> {
        let (c, b) = (self.courier?, self.bullmq?);
        let ratio = match self.better {
            Better::Higher => c / b,
            Better::Lower => b / c,
        };
        ratio.is_finite().then_some(ratio)
    }

    /// Whether Courier meets the target.
    pub fn meets_target(&self) -> Option<bool> {
        let (c, t) = (self.courier?, self.target?);
        Some(match self.better {
            Better::Higher => c >= t,
            Better::Lower => c <= t,
        })
    }
}

/// Everything one run measured.
#[derive(Debug, Default)]
pub struct Report {
    pub rows: Vec<Row>,
    /// Scenarios that failed, with why.
    pub failures: Vec<(String, String, String)>,
}

impl Report {
    /// Adds `system`'s figures for `scenario`.
    pub fn add(&mut self, scenario: &str, system: System, figures: Vec<Figure>) {
        for f in figures {
            let row = match self
                .rows
                .iter_mut()
                .find(|r| r.scenario == scenario && r.figure == f.name)
            {
                Some(row) => row,
                None => {
                    self.rows.push(Row {
                        scenario: scenario.into(),
                        figure: f.name.clone(),
                        better: f.better,
                        courier: None,
                        bullmq: None,
                        target: None,
                    });
                    self.rows.last_mut().expect("just pushed")
                }
            };
            match system {
                System::Courier => {
                    row.courier = Some(f.value);
                    row.target = f.target;
                }
                System::Bullmq => row.bullmq = Some(f.value),
            }
        }
    }

    pub fn fail(&mut self, scenario: &str, system: System, error: &anyhow::Error) {
        self.failures
            .push((scenario.into(), system.name().into(), format!("{error:#}")));
    }

    /// The table and the notes under it.
    pub fn markdown(&self, machine: &Machine, size: &Size, systems: &[System]) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "| scenario | figure | Courier | BullMQ | Courier vs BullMQ | SPEC 8 (Courier) |"
        );
        let _ = writeln!(out, "|---|---|---:|---:|---:|---|");
        for row in &self.rows {
            let target = match (row.target, row.meets_target()) {
                (Some(t), Some(met)) => {
                    let op = if row.better == Better::Higher {
                        "≥"
                    } else {
                        "≤"
                    };
                    format!(
                        "{op} {} {}",
                        number(t),
                        if met { "met" } else { "**not met**" }
                    )
                }
                _ => String::new(),
            };
            let advantage = row
                .advantage()
                .map_or_else(|| "–".into(), |a| format!("{a:.2}×"));
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {advantage} | {target} |",
                row.scenario,
                row.figure,
                row.courier.map_or_else(|| "–".into(), number),
                row.bullmq.map_or_else(|| "–".into(), number),
            );
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "\"Courier vs BullMQ\": how many times better Courier is (above 1: better), \
             whichever way the figure is better."
        );
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "Machine: {} ({} cores), {}. Its HTTP ceiling: the same load generator POSTing \
             to a server that does nothing (the bench target) reaches {} requests/s at {} \
             connections; every HTTP figure above shares that budget.",
            machine.cpu,
            machine.cores,
            machine.date,
            number(machine.http_ceiling),
            size.enqueue_conns
        );
        for system in systems {
            let _ = writeln!(out, "- {}: {}.", system.name(), system.configuration());
        }
        let _ = writeln!(
            out,
            "- Both: the same redis-server (no persistence, noeviction), the same target \
             server, the same load generator; a fresh deployment per scenario; worker \
             concurrency {} except in `inflight` ({}); in `worker-kill` {} jobs whose calls \
             take 80 s run in one worker, a second idle worker is started, and the first \
             is killed with SIGKILL (both systems' lease or lock settings at their defaults: \
             Courier's lease 15 s, BullMQ's lockDuration and stalledInterval 30 s).",
            size.worker_concurrency, size.inflight_jobs, size.kill_jobs
        );
        for (scenario, system, error) in &self.failures {
            let _ = writeln!(out, "- FAILED: {scenario} on {system}: {error}");
        }
        out
    }

    pub fn json(&self, machine: &Machine, size: &Size) -> Value {
        json!({
            "machine": machine,
            "size": size,
            "rows": self.rows,
            "failures": self.failures.iter().map(|(s, sys, e)| json!({"scenario": s, "system": sys, "error": e})).collect::<Vec<_>>(),
        })
    }
}

/// The machine the figures come from.
#[derive(Debug, Serialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub date: String,
    /// What this machine's HTTP alone allows: the load generator's POSTs to the bench
    /// target (which does nothing) at the enqueue scenario's connections, per second.
    pub http_ceiling: f64,
}

impl Machine {
    pub fn this() -> Self {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .find_map(|l| l.strip_prefix("model name"))
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            })
            .unwrap_or_else(|| "unknown CPU".into());
        Self {
            cpu,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            date: chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
            http_ceiling: 0.0,
        }
    }
}

/// A figure as the table shows it: whole numbers with thousands separators, small ones
/// with two decimals.
fn number(v: f64) -> String {
    if v.abs() >= 100.0 {
        let whole = format!("{:.0}", v);
        let (sign, digits) = whole.split_at(usize::from(whole.starts_with('-')));
        let mut grouped = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                grouped.push(',');
            }
            grouped.push(c);
        }
        format!("{sign}{grouped}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(number(1234567.4), "1,234,567");
        assert_eq!(number(-2500.0), "-2,500");
        assert_eq!(number(999.6), "1,000");
        assert_eq!(number(1.234), "1.23");
    }

    #[test]
    fn advantage_follows_the_better_direction() {
        let row = |better, c, b| Row {
            scenario: "s".into(),
            figure: "f".into(),
            better,
            courier: Some(c),
            bullmq: Some(b),
            target: Some(10.0),
        };
        assert_eq!(row(Better::Higher, 30.0, 10.0).advantage(), Some(3.0));
        assert_eq!(row(Better::Lower, 5.0, 10.0).advantage(), Some(2.0));
        assert_eq!(row(Better::Lower, 0.0, 0.0).advantage(), None);
        assert_eq!(row(Better::Higher, 9.0, 1.0).meets_target(), Some(false));
        assert_eq!(row(Better::Lower, 9.0, 1.0).meets_target(), Some(true));
    }
}
