//! The compliance report: one self-contained HTML page (inline CSS and SVG, no script, no
//! external asset) with the figures of a period and the signed checkpoint at its end. Only
//! counts, durations and the checkpoint: no identifier, no pseudonym.

use std::fmt::Write;

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
}

/// The one-month deadline of GDPR Art. 12(3), for comparisons (30.44 days).
const MONTH_SECS: f64 = 30.436_875 * 86_400.0;

/// Escapes text for HTML content and attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

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

const STYLE: &str = "body{font:15px/1.45 system-ui,sans-serif;color:#1d2733;max-width:860px;margin:2em auto;padding:0 1em}\
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.15em;margin-top:1.8em;border-bottom:1px solid #d5dbe3}\
.sub{color:#5b6b7c}table{border-collapse:collapse;width:100%}td,th{padding:.35em .6em;border-bottom:1px solid #e6eaef;text-align:left}\
td.n{text-align:right;font-variant-numeric:tabular-nums}.bad{color:#b3261e;font-weight:600}\
pre{background:#f4f6f9;padding:1em;overflow-x:auto;font-size:.85em}svg{width:100%;height:auto}\
.legend span{display:inline-block;width:.9em;height:.9em;margin:0 .3em 0 1em;vertical-align:-.1em}\
@media print{body{margin:0}}";

/// Renders the page.
pub fn render(r: &Report) -> String {
    let f = &r.figures;
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>Erasure report {from} – {to}</title><style>{STYLE}</style></head><body>\
         <h1>GDPR Art. 17 erasure report</h1>\
         <p class=\"sub\">Period <b>{from}</b> to <b>{to}</b> (UTC, end excluded). Generated {gen}. \
         No personal data: counts, durations and the signed audit checkpoint only.</p>",
        from = time(r.from),
        to = time(r.to),
        gen = time(r.generated_at),
    );
    let row = |h: &mut String, label: &str, value: String, bad: bool| {
        let class = if bad { "n bad" } else { "n" };
        let _ = write!(
            h,
            "<tr><td>{}</td><td class=\"{class}\">{}</td></tr>",
            esc(label),
            esc(&value)
        );
    };
    h.push_str("<h2>Requests received in the period</h2><table>");
    row(&mut h, "Received", f.received.to_string(), false);
    row(
        &mut h,
        "Completed (erased and verified)",
        f.completed.to_string(),
        false,
    );
    row(
        &mut h,
        "Failed (awaiting an operator)",
        f.failed.to_string(),
        f.failed > 0,
    );
    row(
        &mut h,
        "On hold (Art. 17(3) legal basis)",
        f.on_hold.to_string(),
        false,
    );
    row(&mut h, "Cancelled", f.cancelled.to_string(), false);
    row(
        &mut h,
        "Overdue: still open past the due date",
        f.overdue_open.to_string(),
        f.overdue_open > 0,
    );
    row(
        &mut h,
        "Completed after the due date",
        f.completed_late.to_string(),
        f.completed_late > 0,
    );
    h.push_str("</table>");

    h.push_str(
        "<h2>Time to completion</h2><p class=\"sub\">Requests completed in the period, \
        from receipt to verified erasure, against the deadline of one calendar month \
        (Art. 12(3); up to two more months when extended with a reason).</p><table>",
    );
    row(
        &mut h,
        "Completed in the period",
        f.completed_in_period.to_string(),
        false,
    );
    let late = f.completed_in_period - f.within_deadline;
    row(
        &mut h,
        "Completed by their due date",
        format!("{} of {}", f.within_deadline, f.completed_in_period),
        late > 0,
    );
    row(&mut h, "Median", opt_duration(f.median_secs), false);
    row(&mut h, "95th percentile", opt_duration(f.p95_secs), false);
    row(
        &mut h,
        "Worst",
        opt_duration(f.worst_secs),
        f.worst_secs.is_some_and(|w| w > MONTH_SECS),
    );
    h.push_str("</table>");

    h.push_str("<h2>Daily volumes and completion times</h2>");
    h.push_str(&chart(&f.days));

    h.push_str("<h2>Signed checkpoint at the end of the period</h2>");
    match &r.checkpoint {
        Some(cp) => {
            let _ = write!(
                h,
                "<p>The audit log held <b>{size}</b> entries at {at}; this signed note commits to \
                 all of them (RFC 9162 Merkle tree, Ed25519 signature, C2SP signed note):</p>\
                 <pre>{note}</pre><p>Verifier key:</p><pre>{key}</pre>\
                 <p class=\"sub\">Check offline: <code>erasure audit verify --export FILE \
                 --public-key KEY</code> on <code>GET /v1/audit/export?from=…&amp;to=…</code>, \
                 and <code>--receipt</code> on each request's receipt.</p>",
                size = cp.size,
                at = time(cp.created_at),
                note = esc(&cp.note),
                key = esc(&r.public_key),
            );
        }
        None => {
            h.push_str("<p class=\"bad\">No checkpoint was signed by the end of the period.</p>")
        }
    }
    h.push_str("</body></html>\n");
    h
}

/// An inline SVG: bars of requests received and completed per day, and a line of the median
/// time to completion (right axis, days).
pub fn chart(days: &[Day]) -> String {
    const W: f64 = 760.0;
    const H: f64 = 240.0;
    const LEFT: f64 = 44.0;
    const RIGHT: f64 = 56.0;
    const TOP: f64 = 12.0;
    const BOTTOM: f64 = 34.0;
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let max_count = days
        .iter()
        .map(|d| d.received.max(d.completed))
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let max_days = days
        .iter()
        .filter_map(|d| d.median_secs)
        .fold(0.0f64, f64::max)
        .max(3_600.0)
        / 86_400.0;
    let slot = pw / days.len().max(1) as f64;
    let bar = (slot * 0.4).max(0.5);
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {W} {H}\" role=\"img\" \
         aria-label=\"Requests received and completed per day, and median time to completion\">\
         <g font-size=\"11\" fill=\"#5b6b7c\">\
         <line x1=\"{LEFT}\" y1=\"{base}\" x2=\"{right}\" y2=\"{base}\" stroke=\"#9aa7b5\"/>\
         <text x=\"{lx}\" y=\"{ty}\" text-anchor=\"end\">{max_count}</text>\
         <text x=\"{lx}\" y=\"{base}\" text-anchor=\"end\">0</text>\
         <text x=\"{rx}\" y=\"{ty}\">{top}</text>",
        base = TOP + ph,
        right = LEFT + pw,
        lx = LEFT - 6.0,
        rx = LEFT + pw + 6.0,
        ty = TOP + 10.0,
        top = duration(max_days * 86_400.0),
    );
    if let (Some(first), Some(last)) = (days.first(), days.last()) {
        let _ = write!(
            s,
            "<text x=\"{LEFT}\" y=\"{y}\">{first}</text><text x=\"{r}\" y=\"{y}\" text-anchor=\"end\">{last}</text>",
            y = H - 18.0,
            r = LEFT + pw,
            first = first.date,
            last = last.date,
        );
    }
    s.push_str("</g>");
    let mut line = Vec::new();
    for (i, d) in days.iter().enumerate() {
        let x = LEFT + i as f64 * slot + slot * 0.1;
        for (k, (count, colour, what)) in [
            (d.received, "#5b8def", "received"),
            (d.completed, "#2e9d5b", "completed"),
        ]
        .into_iter()
        .enumerate()
        {
            let height = count as f64 / max_count * ph;
            let _ = write!(
                s,
                "<rect x=\"{x:.2}\" y=\"{y:.2}\" width=\"{bar:.2}\" height=\"{height:.2}\" fill=\"{colour}\">\
                 <title>{date}: {count} {what}</title></rect>",
                x = x + k as f64 * bar,
                y = TOP + ph - height,
                date = d.date,
            );
        }
        if let Some(m) = d.median_secs {
            let y = TOP + ph - (m / 86_400.0) / max_days * ph;
            line.push(format!("{:.2},{:.2}", LEFT + (i as f64 + 0.5) * slot, y));
        }
    }
    if !line.is_empty() {
        let _ = write!(
            s,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"#e07b24\" stroke-width=\"2\"/>",
            line.join(" ")
        );
        for p in &line {
            let (x, y) = p.split_once(',').unwrap_or(("0", "0"));
            let _ = write!(
                s,
                "<circle cx=\"{x}\" cy=\"{y}\" r=\"2.5\" fill=\"#e07b24\"/>"
            );
        }
    }
    s.push_str(
        "</svg><p class=\"legend sub\"><span style=\"background:#5b8def\"></span>received\
        <span style=\"background:#2e9d5b\"></span>completed\
        <span style=\"background:#e07b24\"></span>median time to completion (right axis)</p>",
    );
    s
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
        }
    }

    #[test]
    fn the_page_is_self_contained_and_escapes_what_it_shows() {
        let html = render(&report());
        assert!(html.starts_with("<!DOCTYPE html>"));
        for needle in [
            "<svg",
            "<polyline",
            "received",
            "1.5 h",
            "2.3 days",
            "erasure-audit+abcd+key",
            "&lt;script&gt;",
        ] {
            assert!(html.contains(needle), "{needle} missing");
        }
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
