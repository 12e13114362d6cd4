//! The run report: `report.md` (parameters, verdict, witnesses, faults) and
//! `timeline.svg` (each operation's latency over time, coloured by outcome,
//! with the fault windows shaded).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;

use crate::checker::{Verdict, WITNESSES_SHOWN};
use crate::history::{Op, OpType, Process};
use crate::nemesis::Window;
use crate::runner::RunOptions;

/// A fault as it happened: from its start event to its stop event.
#[derive(Clone, Debug)]
pub struct FaultSpan {
    pub name: String,
    pub start_s: f64,
    pub end_s: f64,
    pub nodes: String,
}

/// Pairs each nemesis start event with the next stop of the same fault (or
/// the final heal).
pub fn fault_spans(history: &[Op]) -> Vec<FaultSpan> {
    let mut open: BTreeMap<String, Vec<(f64, String)>> = BTreeMap::new();
    let mut spans = Vec::new();
    let end_of_history = history.last().map_or(0.0, |op| op.time as f64 / 1e9);
    for op in history.iter().filter(|op| op.process.is_nemesis()) {
        let at = op.time as f64 / 1e9;
        match op.value.get("phase").and_then(|p| p.as_str()) {
            Some("start") => {
                let nodes = op.value.get("nodes").map(|n| n.to_string()).unwrap_or_default();
                open.entry(op.f.clone()).or_default().push((at, nodes));
            }
            Some("stop") if op.f == "heal-all" => {
                for (name, starts) in std::mem::take(&mut open) {
                    for (start_s, nodes) in starts {
                        spans.push(FaultSpan { name: name.clone(), start_s, end_s: at, nodes });
                    }
                }
            }
            Some("stop") => {
                if let Some((start_s, nodes)) = open.get_mut(&op.f).and_then(Vec::pop) {
                    spans.push(FaultSpan { name: op.f.clone(), start_s, end_s: at, nodes });
                }
            }
            _ => {}
        }
    }
    for (name, starts) in open {
        for (start_s, nodes) in starts {
            spans.push(FaultSpan { name: name.clone(), start_s, end_s: end_of_history, nodes });
        }
    }
    spans.sort_by(|a, b| a.start_s.total_cmp(&b.start_s));
    spans
}

/// One completed client operation for the plot.
struct Point {
    f: String,
    kind: OpType,
    at_s: f64,
    latency_ms: f64,
}

fn points(history: &[Op]) -> Vec<Point> {
    let mut open: HashMap<&Process, &Op> = HashMap::new();
    let mut out = Vec::new();
    for op in history.iter().filter(|op| !op.process.is_nemesis()) {
        if op.kind == OpType::Invoke {
            open.insert(&op.process, op);
        } else if let Some(invoke) = open.remove(&op.process) {
            out.push(Point {
                f: op.f.clone(),
                kind: op.kind,
                at_s: invoke.time as f64 / 1e9,
                latency_ms: ((op.time - invoke.time) as f64 / 1e6).max(0.1),
            });
        }
    }
    out
}

/// Longest witness entry quoted in the report (history.jsonl has it whole).
const WITNESS_CHARS: usize = 1_500;

fn fault_colour(name: &str) -> RGBColor {
    match name {
        "kill" => RGBColor(214, 39, 40),
        "pause" => RGBColor(148, 103, 189),
        "partition" => RGBColor(31, 119, 180),
        "netem" => RGBColor(140, 86, 75),
        "clock" => RGBColor(227, 119, 194),
        "corrupt" => RGBColor(127, 127, 127),
        "lost-writes" => RGBColor(140, 86, 75),
        "client-cut" => RGBColor(23, 190, 207),
        "answers" => RGBColor(255, 127, 14),
        "membership" => RGBColor(44, 160, 44),
        _ => RGBColor(188, 189, 34),
    }
}

/// Draws the timeline as SVG (no system fonts needed).
pub fn plot_timeline(history: &[Op], path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let points = points(history);
    let spans = fault_spans(history);
    let end_s = history.last().map_or(1.0, |op| op.time as f64 / 1e9).max(1.0);
    let max_ms = points.iter().map(|p| p.latency_ms).fold(10.0, f64::max) * 1.5;
    let root = SVGBackend::new(path, (1400, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("operation latency over time (shaded: fault windows)", ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..end_s, (0.1f64..max_ms).log_scale())?;
    chart.configure_mesh().x_desc("time (s)").y_desc("latency (ms)").draw()?;
    let lanes = [
        "kill",
        "pause",
        "partition",
        "netem",
        "clock",
        "corrupt",
        "lost-writes",
        "client-cut",
        "answers",
        "membership",
        "heal-all",
    ];
    let mut labelled = std::collections::BTreeSet::new();
    for span in &spans {
        let colour = fault_colour(&span.name);
        // Each fault kind shades its own band so overlapping faults stay visible.
        let lane = lanes.iter().position(|l| *l == span.name).unwrap_or(lanes.len() - 1) as f64;
        let band = (max_ms / 0.1).ln() / lanes.len() as f64;
        let low = 0.1 * (band * lane).exp();
        let high = 0.1 * (band * (lane + 1.0)).exp();
        let drawn = chart.draw_series(std::iter::once(Rectangle::new(
            [(span.start_s, low), (span.end_s, high)],
            colour.mix(0.25).filled(),
        )))?;
        // One legend entry per fault kind.
        if labelled.insert(span.name.clone()) {
            drawn
                .label(span.name.clone())
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], colour.mix(0.4).filled()));
        }
    }
    let series: [(&str, OpType, RGBColor); 3] = [
        ("ok", OpType::Ok, RGBColor(44, 160, 44)),
        ("fail", OpType::Fail, RGBColor(214, 39, 40)),
        ("info", OpType::Info, RGBColor(255, 127, 14)),
    ];
    for (label, kind, colour) in series {
        for (f, marker) in [("send", 0), ("poll", 1), ("assign", 2)] {
            let chosen: Vec<(f64, f64)> =
                points.iter().filter(|p| p.kind == kind && p.f == f).map(|p| (p.at_s, p.latency_ms)).collect();
            if chosen.is_empty() {
                continue;
            }
            let name = format!("{f} {label}");
            if marker == 0 {
                chart
                    .draw_series(chosen.iter().map(|&(x, y)| Circle::new((x, y), 2, colour.filled())))?
                    .label(name)
                    .legend(move |(x, y)| Circle::new((x + 5, y), 3, colour.filled()));
            } else if marker == 1 {
                chart
                    .draw_series(chosen.iter().map(|&(x, y)| Cross::new((x, y), 2, colour)))?
                    .label(name)
                    .legend(move |(x, y)| Cross::new((x + 5, y), 3, colour));
            } else {
                chart
                    .draw_series(chosen.iter().map(|&(x, y)| TriangleMarker::new((x, y), 3, colour)))?
                    .label(name)
                    .legend(move |(x, y)| TriangleMarker::new((x + 5, y), 3, colour));
            }
        }
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
    root.present()?;
    Ok(())
}

/// Writes `report.md` and `timeline.svg` into the run directory.
pub fn write(
    dir: &Path,
    options: &RunOptions,
    windows: &[Window],
    history: &[Op],
    verdict: &Verdict,
) -> std::io::Result<()> {
    let plotted = plot_timeline(history, &dir.join("timeline.svg"));
    let mut md = String::new();
    let faults: Vec<&str> = options.faults.iter().map(|f| f.name()).collect();
    let _ = writeln!(md, "# Strata fault-injection run\n");
    let _ = writeln!(
        md,
        "**Verdict: {}**\n",
        if verdict.valid { "valid (no anomalies)" } else { "INVALID (anomalies found)" }
    );
    let _ = writeln!(md, "| parameter | value |\n| --- | --- |");
    let _ = writeln!(md, "| workload | {} |", options.workload.name());
    let _ = writeln!(md, "| nodes | {} |", options.nodes);
    let _ = writeln!(md, "| faults | {} |", faults.join(", "));
    let _ = writeln!(md, "| time limit | {} s |", options.time_limit_s);
    let _ = writeln!(md, "| seed | {} |", options.seed);
    let _ = writeln!(md, "| client processes | {} |", options.concurrency);
    let _ = writeln!(md, "| keys (partitions) | {} |", options.keys);
    let _ = writeln!(md, "| history entries | {} |", history.len());
    let _ = writeln!(md, "| acknowledged sends | {} |", verdict.stats.acknowledged_sends);
    let _ = writeln!(md, "| records read | {} |", verdict.stats.records_read);
    let _ = writeln!(
        md,
        "\nReproduce: `strata-jepsen run --nodes {} --workload {} --faults {} --time-limit {} --seed {}`\n",
        options.nodes,
        options.workload.name(),
        faults.join(","),
        options.time_limit_s,
        options.seed
    );
    let _ = writeln!(md, "## Operations\n\n| f | ok | fail | info |\n| --- | --- | --- | --- |");
    for (f, kinds) in &verdict.stats.completions {
        let get = |k: &str| kinds.get(k).copied().unwrap_or(0);
        let _ = writeln!(md, "| {f} | {} | {} | {} |", get("ok"), get("fail"), get("info"));
    }
    let _ = writeln!(md, "\n## Anomalies\n");
    if verdict.anomalies.is_empty() {
        let _ = writeln!(md, "None.");
    }
    for (name, found) in &verdict.anomalies {
        let _ = writeln!(md, "### {name}: {}\n", found.len());
        for anomaly in found.iter().take(WITNESSES_SHOWN) {
            let _ = writeln!(md, "- {}; witnesses:", anomaly.message);
            for index in &anomaly.ops {
                if let Some(op) = history.get(*index as usize) {
                    // Replica reads list every batch; the file has them whole.
                    let mut text = serde_json::to_string(op).unwrap_or_default();
                    if text.len() > WITNESS_CHARS {
                        let cut = (0..=WITNESS_CHARS).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
                        text.truncate(cut);
                        text.push_str(" ...");
                    }
                    let _ = writeln!(md, "  - `{text}`");
                }
            }
        }
        let _ = writeln!(md);
    }
    for (name, found) in &verdict.allowed {
        let _ = writeln!(md, "- {name} (allowed by this workload): {}", found.len());
    }
    if !verdict.notes.is_empty() {
        let _ = writeln!(md, "\n## Notes\n");
        for note in &verdict.notes {
            let _ = writeln!(md, "- {note}");
        }
    }
    let _ =
        writeln!(md, "\n## Faults as applied\n\n| start (s) | end (s) | fault | nodes |\n| --- | --- | --- | --- |");
    for span in fault_spans(history) {
        let _ = writeln!(md, "| {:.1} | {:.1} | {} | {} |", span.start_s, span.end_s, span.name, span.nodes);
    }
    let _ = writeln!(md, "\nScheduled windows (from the seed): {}", windows.len());
    let _ = writeln!(md, "\n## Timeline\n");
    match plotted {
        Ok(()) => {
            let _ = writeln!(md, "![timeline](timeline.svg)");
        }
        Err(error) => {
            let _ = writeln!(md, "The plot could not be drawn: {error}");
        }
    }
    let _ = writeln!(
        md,
        "\n## Files\n\n- `history.jsonl`: the history\n- `verdict.json`: the checker's verdict\n- `schedule.json`: the fault schedule\n- `nN/node.log`: each node's log"
    );
    std::fs::write(dir.join("report.md"), md)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn op(index: u64, time_s: f64, process: Process, kind: OpType, f: &str, value: serde_json::Value) -> Op {
        Op { index, time: (time_s * 1e9) as u64, process, kind, f: f.into(), value, node: None, error: None }
    }

    #[test]
    fn fault_spans_pair_starts_with_stops_and_the_final_heal() {
        let n = Process::nemesis;
        let history = vec![
            op(0, 1.0, n(), OpType::Info, "kill", json!({"phase": "start", "nodes": [1]})),
            op(1, 2.0, n(), OpType::Info, "partition", json!({"phase": "start", "nodes": []})),
            op(2, 3.0, n(), OpType::Info, "kill", json!({"phase": "stop", "active": 1})),
            op(3, 5.0, n(), OpType::Info, "heal-all", json!({"phase": "stop", "active": 0})),
        ];
        let spans = fault_spans(&history);
        assert_eq!(spans.len(), 2);
        assert_eq!((spans[0].name.as_str(), spans[0].start_s, spans[0].end_s), ("kill", 1.0, 3.0));
        assert_eq!((spans[1].name.as_str(), spans[1].start_s, spans[1].end_s), ("partition", 2.0, 5.0));
    }

    #[test]
    fn the_timeline_is_an_svg_with_the_operations() {
        let history = vec![
            op(0, 0.5, Process::Client(0), OpType::Invoke, "send", json!({"key": 0, "value": 0})),
            op(1, 0.6, Process::Client(0), OpType::Ok, "send", json!({"key": 0, "value": 0, "offset": 0})),
            op(2, 1.0, Process::nemesis(), OpType::Info, "pause", json!({"phase": "start", "nodes": [2]})),
            op(3, 1.5, Process::Client(1), OpType::Invoke, "poll", json!(null)),
            op(4, 4.5, Process::Client(1), OpType::Info, "poll", json!(null)),
            op(5, 5.0, Process::nemesis(), OpType::Info, "heal-all", json!({"phase": "stop", "active": 0})),
        ];
        let path = std::env::temp_dir().join(format!("strata-jepsen-timeline-{}.svg", std::process::id()));
        plot_timeline(&history, &path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..100.min(svg.len())]);
        assert!(svg.contains("send ok") && svg.contains("poll info") && svg.contains("pause"));
        std::fs::remove_file(&path).unwrap();
    }
}
