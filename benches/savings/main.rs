//! What the gateway saves, scenario by scenario: `cargo bench --bench savings`.
//!
//! In one process: the simulator as iDenfy, a fleet of app users whose token client is the one
//! iDenfy's error-handling guide recommends ([`runner::client`]), and, for the second run of each
//! scenario, the gateway between them. Every scenario runs twice, direct and through the gateway,
//! with the same users. Counts come from the simulator's counters and the clients' own records.
//!
//! Writes the table into `docs/savings.md` (between its `savings:table` markers) and the chart to
//! `docs/savings.svg`, and prints the table. A whole run takes about three minutes: every
//! duration is simulated ten times faster than real time (see [`runner::clock`]).

mod chart;
mod runner;

use std::path::PathBuf;
use std::time::Duration;

use runner::app::Traffic;
use runner::clock::SPEED;
use runner::scenario::{self, Path, Scenario};
use runner::tally::Tally;

const START: &str = "<!-- savings:table:start -->";
const END: &str = "<!-- savings:table:end -->";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // One thread: the app, the gateway and the simulator share it, and the run stays light on a
    // shared machine.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let traffic = Traffic::day();
    let mut rows = Vec::new();
    for s in scenario::all() {
        let mut pair = Vec::new();
        for path in [Path::Direct, Path::Gateway] {
            eprintln!("savings: {} ({path:?}) ...", s.name);
            // Every run starts the simulator's fault draws (and the gateway's jitter) from the
            // same seed, so direct and gateway meet the same dice, as far as timing allows.
            fastrand::seed(18);
            let tally = rt.block_on(scenario::run(&s, &traffic, path))?;
            pair.push(tally);
        }
        let gateway = pair.pop().ok_or("no gateway run")?;
        let direct = pair.pop().ok_or("no direct run")?;
        rows.push((s, direct, gateway));
    }
    let table = table(&rows);
    println!("{table}");
    let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs");
    let bars: Vec<chart::Bars> = rows
        .iter()
        .map(|(s, d, g)| chart::Bars {
            label: s.short.to_owned(),
            values: [
                (d.sessions, g.sessions),
                (d.upstream_calls, g.upstream_calls),
                (d.errors_seen, g.errors_seen),
                (d.successes as u64, g.successes as u64),
            ],
        })
        .collect();
    let visits = rows.first().map_or(0, |(_, d, _)| d.visits);
    chart::write(&docs.join("savings.svg"), &bars, visits)?;
    let md = docs.join("savings.md");
    let text = std::fs::read_to_string(&md)?;
    let (head, rest) = text
        .split_once(START)
        .ok_or("docs/savings.md lost its start marker")?;
    let (_, tail) = rest
        .split_once(END)
        .ok_or("docs/savings.md lost its end marker")?;
    std::fs::write(&md, format!("{head}{START}\n{table}{END}{tail}"))?;
    eprintln!("savings: wrote docs/savings.md and docs/savings.svg");
    Ok(())
}

/// The markdown table: one row per scenario and path.
fn table(rows: &[(Scenario, Tally, Tally)]) -> String {
    let mut out = String::from(
        "| scenario | path | app calls | upstream calls | sessions billed | duplicate sessions | 409 seen | 429 seen | 5xx seen | visits with a token | token p50 | token p99 | wall time |\n\
         |---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n",
    );
    for (s, direct, gateway) in rows {
        for (path, t) in [("direct", direct), ("gateway", gateway)] {
            out.push_str(&format!(
                "| {} | {path} | {} | {} | {} | {} | {} | {} | {} | {}/{} | {} | {} | {:.1} s ({:.0} s simulated) |\n",
                s.name,
                t.app_calls,
                t.upstream_calls,
                t.sessions,
                t.duplicates,
                t.seen_409,
                t.seen_429,
                t.seen_5xx,
                t.successes,
                t.visits,
                seconds(t.p50),
                seconds(t.p99),
                t.wall.as_secs_f64(),
                t.wall.as_secs_f64() * f64::from(SPEED),
            ));
        }
    }
    out
}

fn seconds(d: Option<Duration>) -> String {
    d.map_or("–".to_owned(), |d| format!("{:.1} s", d.as_secs_f64()))
}
