//! The `--chart` picture: a grouped bar chart of median execution time per query class, before
//! and after, as a self-contained SVG written by hand (a few dozen lines of markup do not need a
//! plotting library and its build time). Pure: data in, text out.

use std::fmt::Write;

/// One group of bars.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub key: String,
    pub label: String,
    pub before_ms: f64,
    pub after_ms: f64,
}

const GROUP_WIDTH: f64 = 150.0;
/// Narrowest plot, so that the title fits above one or two groups.
const MIN_PLOT_WIDTH: f64 = 450.0;
const BAR_WIDTH: f64 = 48.0;
const PLOT_HEIGHT: f64 = 260.0;
const LEFT: f64 = 80.0;
const TOP: f64 = 70.0;
const BOTTOM: f64 = 70.0;
const RIGHT: f64 = 30.0;
const BEFORE_FILL: &str = "#9e9e9e";
const AFTER_FILL: &str = "#1f77b4";
/// Class labels longer than this wrap onto a second line.
const LABEL_WRAP: usize = 20;

/// Renders the chart. Every bar is a `<rect class="bar before|after" data-class="KEY">` with a
/// `<title>` tooltip giving its value.
pub fn render(title: &str, groups: &[Group]) -> String {
    let slot = GROUP_WIDTH.max(MIN_PLOT_WIDTH / groups.len().max(1) as f64);
    let width = LEFT + RIGHT + slot * groups.len().max(1) as f64;
    let height = TOP + PLOT_HEIGHT + BOTTOM;
    let max = groups
        .iter()
        .flat_map(|g| [g.before_ms, g.after_ms])
        .fold(0.0_f64, f64::max);
    let (top_value, step) = axis(max);
    let y = |v: f64| TOP + PLOT_HEIGHT - v / top_value * PLOT_HEIGHT;

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, "<title>{}</title>", escape(title));
    let _ = writeln!(
        s,
        r#"<rect x="0" y="0" width="{width}" height="{height}" fill="white"/>"#
    );
    let _ = writeln!(
        s,
        r#"<text x="{}" y="24" text-anchor="middle" font-size="15" font-weight="bold">{}</text>"#,
        width / 2.0,
        escape(title)
    );
    // Legend.
    for (i, (name, fill)) in [("before", BEFORE_FILL), ("after", AFTER_FILL)]
        .iter()
        .enumerate()
    {
        let x = LEFT + i as f64 * 90.0;
        let _ = writeln!(
            s,
            r#"<rect class="legend" x="{x}" y="38" width="12" height="12" fill="{fill}"/><text x="{}" y="48">{name}</text>"#,
            x + 17.0
        );
    }
    // Y axis with grid lines.
    let mut tick = 0.0;
    while tick <= top_value + step / 2.0 {
        let ty = y(tick);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{ty:.1}" x2="{:.1}" y2="{ty:.1}" stroke="#e0e0e0"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            width - RIGHT,
            LEFT - 6.0,
            ty + 4.0,
            tick_label(tick, step)
        );
        tick += step;
    }
    let _ = writeln!(
        s,
        r#"<text x="18" y="{:.1}" text-anchor="middle" transform="rotate(-90 18 {:.1})">median execution time (ms)</text>"#,
        TOP + PLOT_HEIGHT / 2.0,
        TOP + PLOT_HEIGHT / 2.0
    );
    for (i, g) in groups.iter().enumerate() {
        let x0 = LEFT + i as f64 * slot + (slot - 2.0 * BAR_WIDTH - 6.0) / 2.0;
        for (j, (side, value, fill)) in [
            ("before", g.before_ms, BEFORE_FILL),
            ("after", g.after_ms, AFTER_FILL),
        ]
        .into_iter()
        .enumerate()
        {
            let x = x0 + j as f64 * (BAR_WIDTH + 6.0);
            let top = y(value.max(0.0));
            let h = TOP + PLOT_HEIGHT - top;
            let _ = writeln!(
                s,
                r#"<rect class="bar {side}" data-class="{}" x="{x:.1}" y="{top:.1}" width="{BAR_WIDTH}" height="{h:.1}" fill="{fill}"><title>{}, {side}: {}</title></rect>"#,
                escape(&g.key),
                escape(&g.label),
                format_ms(value)
            );
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="11">{}</text>"#,
                x + BAR_WIDTH / 2.0,
                top - 4.0,
                format_ms(value)
            );
        }
        let cx = LEFT + (i as f64 + 0.5) * slot;
        for (line, text) in wrap(&g.label).iter().enumerate() {
            let _ = writeln!(
                s,
                r#"<text x="{cx:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                TOP + PLOT_HEIGHT + 20.0 + line as f64 * 15.0,
                escape(text)
            );
        }
    }
    let _ = writeln!(
        s,
        r#"<line x1="{LEFT}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="black"/>"#,
        TOP + PLOT_HEIGHT,
        width - RIGHT,
        TOP + PLOT_HEIGHT
    );
    let _ = writeln!(
        s,
        r#"<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{:.1}" stroke="black"/>"#,
        TOP + PLOT_HEIGHT
    );
    s.push_str("</svg>\n");
    s
}

/// The axis top and tick step: a 1, 2 or 5 times a power of ten, about five ticks.
fn axis(max: f64) -> (f64, f64) {
    if !max.is_finite() || max <= 0.0 {
        return (1.0, 0.2);
    }
    let raw = max / 5.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude);
    ((max / step).ceil() * step, step)
}

fn tick_label(v: f64, step: f64) -> String {
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10().floor()) as usize
    };
    format!("{v:.decimals$}")
}

fn format_ms(ms: f64) -> String {
    if ms < 1.0 {
        format!("{ms:.3} ms")
    } else if ms < 100.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

/// At most two lines, split at a space near the middle.
fn wrap(label: &str) -> Vec<String> {
    if label.chars().count() <= LABEL_WRAP {
        return vec![label.to_string()];
    }
    let middle = label.len() / 2;
    let split = label
        .match_indices(' ')
        .map(|(i, _)| i)
        .min_by_key(|i| i.abs_diff(middle));
    match split {
        Some(i) => vec![label[..i].to_string(), label[i + 1..].to_string()],
        None => vec![label.to_string()],
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups() -> Vec<Group> {
        vec![
            Group {
                key: "property_date_range".into(),
                label: "Property + date range query".into(),
                before_ms: 250.0,
                after_ms: 50.0,
            },
            Group {
                key: "custom:<odd> & \"quoted\"".into(),
                label: "Joe's <odd> & \"quoted\" query".into(),
                before_ms: 0.2,
                after_ms: 0.0,
            },
        ]
    }

    #[test]
    fn the_chart_is_well_formed_xml_with_one_bar_per_class_and_side() {
        let svg = render("public.pricing_data: before & after", &groups());
        let doc = roxmltree::Document::parse(&svg).expect("well-formed SVG");
        let bars = |side: &str| {
            doc.descendants()
                .filter(|n| n.attribute("class") == Some(&format!("bar {side}")))
                .map(|n| n.attribute("data-class").unwrap().to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            bars("before"),
            ["property_date_range", "custom:<odd> & \"quoted\""]
        );
        assert_eq!(bars("after").len(), 2);
        assert_eq!(doc.root_element().tag_name().name(), "svg");
    }

    #[test]
    fn bar_heights_are_proportional_to_the_values() {
        let svg = render("t", &groups());
        let doc = roxmltree::Document::parse(&svg).unwrap();
        let heights: Vec<f64> = doc
            .descendants()
            .filter(|n| n.attribute("class").is_some_and(|c| c.starts_with("bar ")))
            .map(|n| n.attribute("height").unwrap().parse().unwrap())
            .collect();
        assert!((heights[0] / heights[1] - 5.0).abs() < 0.01, "{heights:?}");
        assert_eq!(heights[3], 0.0);
    }

    #[test]
    fn axis_steps_are_round_numbers() {
        assert_eq!(axis(250.0), (250.0, 50.0));
        assert_eq!(axis(260.0), (300.0, 100.0));
        assert_eq!(axis(0.9), (1.0, 0.2));
        assert_eq!(axis(12.0), (15.0, 5.0));
        assert_eq!(axis(0.0), (1.0, 0.2));
    }

    #[test]
    fn long_labels_wrap_at_a_space() {
        assert_eq!(
            wrap("Property + date range query"),
            ["Property + date", "range query"]
        );
        assert_eq!(wrap("Recent data fetch"), ["Recent data fetch"]);
    }
}
