//! The compliance report: one self-contained HTML page (inline CSS and SVG, no script, no
//! external asset) with the figures of a period and the signed checkpoint at its end. Only
//! counts, durations and the checkpoint: no identifier, no pseudonym.

use askama::Template;
use chrono::{DateTime, SecondsFormat, Utc};

use super::log::StoredCheckpoint;
use crate::store::audit::{Day, Figures};

/// Everything the page shows.
pub struct Report {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub generated_at: DateTime<Utc>,
    pub figures: Figures,
    /// The newest checkpoint signed by the end of the period.
    pub checkpoint: Option<StoredCheckpoint>,
    pub public_key: String,
    /// The retention and the oldest live pseudonym epoch (`retention::statement`).
    pub retention: String,
    /// Who acted in the period: (the person's name, their actor id, what they did), from the
    /// people table (the audit log holds the id only).
    pub people: Vec<(String, String, String)>,
}

/// The one-month deadline of GDPR Art. 12(3), for comparisons (30.44 days).
const MONTH_SECS: f64 = 30.436_875 * 86_400.0;

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A duration for people: milliseconds, seconds, minutes, hours or days.
pub fn duration(secs: f64) -> String {
    if secs < 0.9995 {
        format!("{:.0} ms", (secs * 1000.0).max(0.0))
    } else if secs < 60.0 {
        format!("{:.0} s", secs.max(0.0))
    } else if secs < 3_600.0 {
        format!("{:.0} min", secs / 60.0)
    } else if secs < 2.0 * 86_400.0 {
        format!("{:.1} h", secs / 3_600.0)
    } else {
        format!("{:.1} days", secs / 86_400.0)
    }
}

fn opt_duration(secs: Option<f64>) -> String {
    secs.map_or_else(
        || "–".to_string(),
        |s| {
            format!(
                "{} ({:.1}% of the month)",
                duration(s),
                s / MONTH_SECS * 100.0
            )
        },
    )
}

/// One line of a figures table.
pub struct Row {
    pub label: &'static str,
    pub value: String,
    /// Shown in red: something an auditor should look at.
    pub bad: bool,
}

fn row(label: &'static str, value: impl ToString, bad: bool) -> Row {
    Row {
        label,
        value: value.to_string(),
        bad,
    }
}

#[derive(Template)]
#[template(path = "report.html")]
struct Page<'a> {
    from: String,
    to: String,
    generated: String,
    received: Vec<Row>,
    timing: Vec<Row>,
    chart: Chart,
    checkpoint: Option<&'a StoredCheckpoint>,
    checkpoint_at: String,
    public_key: &'a str,
    retention: &'a str,
    people: &'a [(String, String, String)],
}

/// Renders the page.
pub fn render(r: &Report) -> String {
    let f = &r.figures;
    let late = f.completed_in_period - f.within_deadline;
    let page = Page {
        from: time(r.from),
        to: time(r.to),
        generated: time(r.generated_at),
        received: vec![
            row("Received", f.received, false),
            row("Completed (erased and verified)", f.completed, false),
            row("Failed (awaiting an operator)", f.failed, f.failed > 0),
            row("On hold (Art. 17(3) legal basis)", f.on_hold, false),
            row("Cancelled", f.cancelled, false),
            row(
                "Overdue: still open past the due date",
                f.overdue_open,
                f.overdue_open > 0,
            ),
            row(
                "Completed after the due date",
                f.completed_late,
                f.completed_late > 0,
            ),
        ],
        timing: vec![
            row("Completed in the period", f.completed_in_period, false),
            row(
                "Completed by their due date",
                format!("{} of {}", f.within_deadline, f.completed_in_period),
                late > 0,
            ),
            row("Median", opt_duration(f.median_secs), false),
            row("95th percentile", opt_duration(f.p95_secs), false),
            row(
                "Worst",
                opt_duration(f.worst_secs),
                f.worst_secs.is_some_and(|w| w > MONTH_SECS),
            ),
        ],
        chart: chart(&f.days),
        checkpoint: r.checkpoint.as_ref(),
        checkpoint_at: r
            .checkpoint
            .as_ref()
            .map_or(String::new(), |c| time(c.created_at)),
        public_key: &r.public_key,
        retention: &r.retention,
        people: &r.people,
    };
    let mut html = page.render().expect("the report's template renders");
    html.push('\n');
    html
}

/// A bar of the chart, its numbers formatted for SVG.
pub struct Bar {
    pub x: String,
    pub y: String,
    pub width: String,
    pub height: String,
    pub colour: &'static str,
    pub title: String,
}

/// The chart's geometry (`templates/chart.html` draws it): bars of requests received and
/// completed per day, and a line of the median time to completion (right axis).
pub struct Chart {
    pub bars: Vec<Bar>,
    /// The median line's points, `x,y` each.
    pub points: Vec<(String, String)>,
    pub max_count: i64,
    /// The right axis's top, as a duration.
    pub top: String,
    pub first: String,
    pub last: String,
}

/// Lays out the chart of `days`.
pub fn chart(days: &[Day]) -> Chart {
    const LEFT: f64 = 44.0;
    const RIGHT: f64 = 56.0;
    const TOP: f64 = 12.0;
    const BOTTOM: f64 = 34.0;
    let (pw, ph) = (760.0 - LEFT - RIGHT, 240.0 - TOP - BOTTOM);
    let max_count = days
        .iter()
        .map(|d| d.received.max(d.completed))
        .max()
        .unwrap_or(0)
        .max(1);
    let max_days = days
        .iter()
        .filter_map(|d| d.median_secs)
        .fold(0.0f64, f64::max)
        .max(3_600.0)
        / 86_400.0;
    let slot = pw / days.len().max(1) as f64;
    let bar = (slot * 0.4).max(0.5);
    let mut bars = Vec::new();
    let mut points = Vec::new();
    for (i, d) in days.iter().enumerate() {
        let x = LEFT + i as f64 * slot + slot * 0.1;
        for (k, (count, colour, what)) in [
            (d.received, "#5b8def", "received"),
            (d.completed, "#2e9d5b", "completed"),
        ]
        .into_iter()
        .enumerate()
        {
            let height = count as f64 / max_count as f64 * ph;
            bars.push(Bar {
                x: format!("{:.2}", x + k as f64 * bar),
                y: format!("{:.2}", TOP + ph - height),
                width: format!("{bar:.2}"),
                height: format!("{height:.2}"),
                colour,
                title: format!("{}: {count} {what}", d.date),
            });
        }
        if let Some(m) = d.median_secs {
            let y = TOP + ph - (m / 86_400.0) / max_days * ph;
            points.push((
                format!("{:.2}", LEFT + (i as f64 + 0.5) * slot),
                format!("{y:.2}"),
            ));
        }
    }
    Chart {
        bars,
        points,
        max_count,
        top: duration(max_days * 86_400.0),
        first: days.first().map(|d| d.date.to_string()).unwrap_or_default(),
        last: days.last().map(|d| d.date.to_string()).unwrap_or_default(),
    }
}

impl Chart {
    /// The median line's points as SVG's `points` attribute.
    pub fn polyline(&self) -> String {
        self.points
            .iter()
            .map(|(x, y)| format!("{x},{y}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn report() -> Report {
        let day = |d: u32, received, completed, median_secs| Day {
            date: NaiveDate::from_ymd_opt(2026, 11, d).unwrap(),
            received,
            completed,
            median_secs,
        };
        Report {
            from: "2026-11-01T00:00:00Z".parse().unwrap(),
            to: "2026-11-04T00:00:00Z".parse().unwrap(),
            generated_at: "2026-11-28T00:00:00Z".parse().unwrap(),
            figures: Figures {
                received: 12,
                completed: 9,
                failed: 1,
                on_hold: 1,
                overdue_open: 1,
                completed_in_period: 9,
                within_deadline: 9,
                median_secs: Some(5_400.0),
                p95_secs: Some(90_000.0),
                worst_secs: Some(200_000.0),
                days: vec![
                    day(1, 5, 3, Some(3_600.0)),
                    day(2, 0, 0, None),
                    day(3, 7, 6, Some(7_200.0)),
                ],
                ..Figures::default()
            },
            checkpoint: Some(StoredCheckpoint {
                size: 77,
                root: [7; 32],
                note: "erasure/audit-log/v1\n77\nroot<script>\n\n— erasure-audit sig\n".into(),
                created_at: "2026-11-03T23:59:00Z".parse().unwrap(),
            }),
            public_key: "erasure-audit+abcd+key".into(),
            retention: "Retention: 1095 days".into(),
            people: vec![("Ann <b>".into(), "person:1".into(), "approved 2".into())],
        }
    }

    #[test]
    fn the_page_is_self_contained_and_escapes_what_it_shows() {
        let html = render(&report());
        assert!(html.starts_with("<!doctype html>"));
        for needle in [
            "<svg",
            "<polyline",
            "received",
            "1.5 h",
            "2.3 days",
            "erasure-audit+abcd+key",
        ] {
            assert!(html.contains(needle), "{needle} missing");
        }
        assert!(
            html.contains("root&#60;script&#62;") || html.contains("root&lt;script&gt;"),
            "the note is escaped"
        );
        assert!(html.contains("approved 2") && !html.contains("Ann <b>"));
        assert!(
            !html.contains("<script"),
            "no script, and the note is escaped"
        );
        for external in ["src=\"http", "href=\"http", "@import", "url("] {
            assert!(!html.contains(external), "external asset: {external}");
        }
        // Three days, two bars each.
        assert_eq!(html.matches("<rect").count(), 6);
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(duration(12.4), "12 s");
        assert_eq!(duration(0.0374), "37 ms");
        assert_eq!(duration(0.0), "0 ms");
        assert_eq!(duration(0.9996), "1 s");
        assert_eq!(duration(90.0), "2 min");
        assert_eq!(duration(5_400.0), "1.5 h");
        assert_eq!(duration(3.0 * 86_400.0), "3.0 days");
    }
}
