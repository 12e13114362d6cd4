//! A strict reader of the OpenMetrics 1.0 text format, for tests that scrape
//! a node: it refuses what a lenient line grep would let through (a sample
//! of no declared family, a family split in two, a histogram whose buckets
//! do not add up, a missing `# EOF`), so a test that uses it fails when the
//! exposition is malformed, not only when a number is wrong.
//!
//! Exemplars and timestamps are refused too: a node exposes neither.

use std::collections::{BTreeMap, BTreeSet};

/// One metric family: its descriptors and its samples, in order.
#[derive(Clone, Debug, PartialEq)]
pub struct Family {
    pub name: String,
    /// `counter`, `gauge`, `histogram`, ... as declared by `# TYPE`.
    pub kind: String,
    pub help: Option<String>,
    pub unit: Option<String>,
    pub samples: Vec<Sample>,
}

/// One sample line: the full sample name (with its suffix, e.g. `_total`),
/// its labels in order, and its value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Labels,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
    }
}

/// Where and why an exposition is not valid OpenMetrics text.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("line {line}: {problem}")]
pub struct InvalidExposition {
    /// 1-based; the line after the last when the end is wrong.
    pub line: usize,
    pub problem: String,
}

/// Sample name suffixes each family type allows (OpenMetrics 1.0).
fn suffixes(kind: &str) -> Option<&'static [&'static str]> {
    Some(match kind {
        "counter" => &["_total", "_created"],
        "gauge" | "unknown" | "stateset" => &[""],
        "histogram" => &["_bucket", "_count", "_sum", "_created"],
        "gaugehistogram" => &["_bucket", "_gcount", "_gsum"],
        "summary" => &["", "_count", "_sum", "_created"],
        "info" => &["_info"],
        _ => return None,
    })
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A number as OpenMetrics writes it: decimal or exponent notation, or
/// exactly `+Inf`, `-Inf`, `NaN` (Rust's parser alone would also take `inf`).
fn parse_number(text: &str) -> Option<f64> {
    match text {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ if text.bytes().all(|b| b.is_ascii_digit() || b".eE+-".contains(&b))
            && text.bytes().any(|b| b.is_ascii_digit()) =>
        {
            text.parse().ok()
        }
        _ => None,
    }
}

/// Label names and values, in order.
type Labels = Vec<(String, String)>;

/// `{a="x",b="y"}` at the start of `text`: the labels and the rest.
fn parse_labels(text: &str) -> Result<(Labels, &str), String> {
    let Some(mut rest) = text.strip_prefix('{') else { return Ok((Vec::new(), text)) };
    let mut labels: Labels = Vec::new();
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        if !labels.is_empty() {
            rest = rest.strip_prefix(',').ok_or("labels must be separated by ','")?;
        }
        let (name, after) = rest.split_once("=\"").ok_or("a label must be name=\"value\"")?;
        if !is_label_name(name) {
            return Err(format!("'{name}' is not a valid label name"));
        }
        if labels.iter().any(|(seen, _)| seen == name) {
            return Err(format!("label '{name}' appears twice"));
        }
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err(format!("the value of label '{name}' is not closed")),
                Some((index, '"')) => break index,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    _ => return Err(format!("label '{name}' has an escape other than \\\\, \\\" or \\n")),
                },
                Some((_, c)) => value.push(c),
            }
        };
        labels.push((name.to_string(), value));
        rest = &after[end + 1..];
    }
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ']).ok_or("a sample needs a value")?;
    let name = &line[..name_end];
    if !is_metric_name(name) {
        return Err(format!("'{name}' is not a valid metric name"));
    }
    let (labels, rest) = parse_labels(&line[name_end..])?;
    let value = rest.strip_prefix(' ').ok_or("the value must follow one space")?;
    if value.contains(' ') {
        return Err("timestamps and exemplars are not expected from a node".into());
    }
    let value = parse_number(value).ok_or_else(|| format!("'{value}' is not a number"))?;
    Ok(Sample { name: name.to_string(), labels, value })
}

/// Reads a whole exposition and checks it: every line is a descriptor
/// (`# TYPE`, `# HELP`, `# UNIT`) or a sample; each family is declared by
/// `# TYPE` before its samples and appears in one block; descriptors come
/// once each, before the family's samples; a unit is the name's suffix;
/// every sample is named after its family with a suffix its type allows;
/// no series (name and labels) repeats; counters are not negative;
/// histograms have ascending buckets ending in `+Inf`, cumulative counts,
/// a `_count` equal to the `+Inf` bucket and a `_sum`; and the text ends with
/// `# EOF` and a newline, with nothing after.
pub fn parse(text: &str) -> Result<Vec<Family>, InvalidExposition> {
    let body = text.strip_suffix("# EOF\n").ok_or_else(|| InvalidExposition {
        line: text.lines().count() + 1,
        problem: "the exposition must end with \"# EOF\\n\"".into(),
    })?;
    let mut families: Vec<Family> = Vec::new();
    let mut closed: BTreeSet<String> = BTreeSet::new();
    let mut series: BTreeSet<(String, Labels)> = BTreeSet::new();
    for (index, line) in body.split_terminator('\n').enumerate() {
        let fail = |problem: String| InvalidExposition { line: index + 1, problem };
        if line.is_empty() || line.contains('\r') {
            return Err(fail("blank lines and carriage returns are not allowed".into()));
        }
        if let Some(descriptor) = line.strip_prefix("# ") {
            let mut parts = descriptor.splitn(3, ' ');
            let (keyword, name, rest) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next());
            if !is_metric_name(name) {
                return Err(fail(format!("'{name}' is not a valid metric family name")));
            }
            if !matches!(keyword, "TYPE" | "HELP" | "UNIT") {
                return Err(fail(format!("'# {keyword}' is not a descriptor")));
            }
            if families.last().is_none_or(|family| family.name != name) {
                // A new family: the one before it is complete.
                if let Some(previous) = families.last() {
                    if previous.kind.is_empty() {
                        return Err(fail(format!("family {} has no TYPE line", previous.name)));
                    }
                    closed.insert(previous.name.clone());
                }
                if closed.contains(name) {
                    return Err(fail(format!("family {name} appears in two places")));
                }
                families.push(Family {
                    name: name.to_string(),
                    kind: String::new(),
                    help: None,
                    unit: None,
                    samples: Vec::new(),
                });
            }
            let family = families.last_mut().expect("pushed above");
            if !family.samples.is_empty() {
                return Err(fail(format!("{keyword} of {name} after its samples")));
            }
            let value = rest.unwrap_or("").to_string();
            match keyword {
                "TYPE" if family.kind.is_empty() => {
                    if suffixes(&value).is_none() {
                        return Err(fail(format!("'{value}' is not an OpenMetrics type")));
                    }
                    family.kind = value;
                }
                "HELP" if family.help.is_none() => family.help = Some(value),
                "UNIT" if family.unit.is_none() => {
                    if value.is_empty() || !name.ends_with(&format!("_{value}")) {
                        return Err(fail(format!("family {name} does not end with its unit '{value}'")));
                    }
                    family.unit = Some(value);
                }
                _ => return Err(fail(format!("family {name} has two {keyword} lines"))),
            }
            continue;
        }
        if line.starts_with('#') {
            return Err(fail("a comment line must be '# TYPE', '# HELP', '# UNIT' or the final '# EOF'".into()));
        }
        let sample = parse_sample(line).map_err(fail)?;
        let Some(family) = families.last_mut() else {
            return Err(fail(format!("sample {} before any family was declared", sample.name)));
        };
        if family.kind.is_empty() {
            return Err(fail(format!("family {} has no TYPE line before its samples", family.name)));
        }
        let suffix = sample
            .name
            .strip_prefix(family.name.as_str())
            .filter(|suffix| suffixes(&family.kind).is_some_and(|allowed| allowed.contains(suffix)));
        if suffix.is_none() {
            return Err(fail(format!(
                "sample {} does not belong to family {} ({})",
                sample.name, family.name, family.kind
            )));
        }
        if !series.insert((sample.name.clone(), sample.labels.clone())) {
            return Err(fail(format!("series {} {:?} appears twice", sample.name, sample.labels)));
        }
        if family.kind == "counter" && (sample.value.is_nan() || sample.value < 0.0) {
            return Err(fail(format!("counter sample {} is {}", sample.name, sample.value)));
        }
        family.samples.push(sample);
    }
    if let Some(last) = families.last().filter(|family| family.kind.is_empty()) {
        return Err(InvalidExposition {
            line: body.split_terminator('\n').count() + 1,
            problem: format!("family {} has no TYPE line", last.name),
        });
    }
    for family in families.iter().filter(|family| family.kind == "histogram") {
        check_histogram(family).map_err(|problem| InvalidExposition {
            line: body.split_terminator('\n').count() + 1,
            problem: format!("histogram {}: {problem}", family.name),
        })?;
    }
    Ok(families)
}

/// Buckets per label set (the labels other than `le`): ascending bounds
/// ending in `+Inf`, cumulative counts, `_count` equal to the `+Inf`
/// bucket, and a `_sum`.
fn check_histogram(family: &Family) -> Result<(), String> {
    let mut buckets: BTreeMap<Labels, Vec<(f64, f64)>> = BTreeMap::new();
    let mut counts: BTreeMap<Labels, f64> = BTreeMap::new();
    let mut sums: BTreeSet<Labels> = BTreeSet::new();
    for sample in &family.samples {
        let others: Labels = sample.labels.iter().filter(|(key, _)| key != "le").cloned().collect();
        match &sample.name[family.name.len()..] {
            "_bucket" => {
                let le = sample.label("le").ok_or("a bucket without an le label")?;
                let bound = parse_number(le).ok_or_else(|| format!("le=\"{le}\" is not a number"))?;
                buckets.entry(others).or_default().push((bound, sample.value));
            }
            "_count" => {
                counts.insert(others, sample.value);
            }
            "_sum" => {
                sums.insert(others);
            }
            _ => {}
        }
    }
    if buckets.is_empty() {
        return Err("no buckets".into());
    }
    for (labels, buckets) in &buckets {
        if !buckets.windows(2).all(|pair| pair[0].0 < pair[1].0) {
            return Err(format!("{labels:?}: bucket bounds are not ascending"));
        }
        if !buckets.windows(2).all(|pair| pair[0].1 <= pair[1].1) {
            return Err(format!("{labels:?}: bucket counts are not cumulative"));
        }
        let (last_bound, last_count) = buckets.last().copied().unwrap_or_default();
        if last_bound != f64::INFINITY {
            return Err(format!("{labels:?}: the last bucket is not +Inf"));
        }
        if counts.get(labels) != Some(&last_count) {
            return Err(format!("{labels:?}: _count is not the +Inf bucket's {last_count}"));
        }
        if !sums.contains(labels) {
            return Err(format!("{labels:?}: no _sum"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "\
# HELP requests Requests answered.
# TYPE requests counter
requests_total{result=\"ok\"} 3
requests_total{result=\"error\"} 0
# HELP latency_seconds Time taken.
# TYPE latency_seconds histogram
# UNIT latency_seconds seconds
latency_seconds_sum 0.5
latency_seconds_count 2
latency_seconds_bucket{le=\"1.6e-5\"} 1
latency_seconds_bucket{le=\"0.5\"} 2
latency_seconds_bucket{le=\"+Inf\"} 2
# TYPE up gauge
up{path=\"a\\\"b\\\\c\\nd\"} -1.5e3
# EOF
";

    #[test]
    fn a_valid_exposition_reads_whole() {
        let families = parse(VALID).unwrap();
        let names: Vec<&str> = families.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["requests", "latency_seconds", "up"]);
        assert_eq!(families[0].samples[0].label("result"), Some("ok"));
        assert_eq!(families[1].unit.as_deref(), Some("seconds"));
        assert_eq!(families[2].samples[0].label("path"), Some("a\"b\\c\nd"));
        assert_eq!(families[2].samples[0].value, -1500.0);
        assert_eq!(families[2].help, None);
    }

    /// Each broken variant of `VALID` and a word its error must contain.
    #[test]
    fn malformed_expositions_are_refused() {
        let cases = [
            (VALID.replace("# EOF\n", ""), "# EOF"),
            (VALID.replace("# EOF\n", "# EOF\nup 1\n"), "# EOF"),
            (VALID.replace("# TYPE requests counter\n", ""), "no TYPE"),
            (format!("up 1\n{VALID}"), "before any family"),
            (VALID.replace("requests_total{result=\"ok\"}", "request_total{result=\"ok\"}"), "does not belong"),
            (VALID.replace("requests_total{result=\"error\"} 0", "requests_total{result=\"ok\"} 0"), "twice"),
            (VALID.replace("} 0\n", "} -1\n"), "counter sample"),
            (VALID.replace("# UNIT latency_seconds seconds", "# UNIT latency_seconds bytes"), "unit"),
            (VALID.replace("_bucket{le=\"0.5\"} 2", "_bucket{le=\"0.5\"} 0"), "cumulative"),
            (VALID.replace("latency_seconds_bucket{le=\"+Inf\"} 2\n", ""), "+Inf"),
            (VALID.replace("latency_seconds_count 2", "latency_seconds_count 3"), "_count"),
            (VALID.replace("latency_seconds_sum 0.5\n", ""), "_sum"),
            (VALID.replace("} -1.5e3", "} inf"), "not a number"),
            (VALID.replace("} 3\n", "} 3 1700000000\n"), "timestamps"),
            (VALID.replace("# TYPE up gauge\n", "# TYPE up gauge\n\n"), "blank"),
            (VALID.replace("# TYPE up gauge\nup", "# TYPE requests gauge\nrequests"), "two places"),
            (VALID.replace("# TYPE up gauge\n", "# TYPE up gauge\n# HELP up x\n# HELP up y\n"), "two HELP"),
            (format!("# HELP x y\n{VALID}"), "no TYPE"),
            (VALID.replace("# EOF\n", "# HELP x y\n# EOF\n"), "no TYPE"),
            (VALID.replace("# TYPE up gauge\n", "# TYPE up gauge\n# TYPE up counter\n"), "two TYPE"),
            (VALID.replace("# TYPE up gauge\n", "# TYPE up widget\n"), "not an OpenMetrics type"),
            (VALID.replace("{result=\"ok\"}", "{result=\"ok\",result=\"ok\"}"), "twice"),
            (VALID.replace("{result=\"ok\"}", "{result=ok}"), "name=\"value\""),
            (VALID.replace("# TYPE up gauge\n", "# a comment\n"), "not a descriptor"),
            (VALID.replace("# TYPE up gauge\n", "#TYPE up gauge\n"), "comment line"),
        ];
        for (text, expected) in cases {
            let error = parse(&text).expect_err(&text);
            assert!(error.problem.contains(expected), "expected '{expected}' in '{error}' for:\n{text}");
        }
    }
}
