//! The chart: panels of grouped bars (sessions billed, upstream calls, errors the app saw, and
//! for context the visits that got a token), direct against gateway for each scenario, as SVG
//! (plotters' SVG backend, no fonts needed).

use std::path::Path;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// One scenario's pair of bars, per panel.
pub struct Bars {
    pub label: String,
    /// (direct, gateway) for each panel, in [`PANELS`]' order.
    pub values: [(u64, u64); 4],
}

pub const PANELS: [&str; 4] = [
    "Sessions billed (iDenfy's count; lower is cheaper, unless users went unserved: see the last panel)",
    "Upstream calls iDenfy received",
    "Errors the app saw (409, 429, 5xx: every answer that was not a token)",
    "User visits that got a token (higher is better), of",
];

const DIRECT: RGBColor = RGBColor(160, 160, 160);
const GATEWAY: RGBColor = RGBColor(31, 119, 180);
/// x units per scenario: the direct bar spans 2..5, the gateway bar 5..8, the label sits at 5.
const SLOT: i32 = 10;

/// Writes the chart; `visits` is the number of user visits of every run.
pub fn write(path: &Path, bars: &[Bars], visits: usize) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (1200, 1300)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((PANELS.len(), 1));
    for (p, area) in panels.iter().enumerate() {
        let title = match p {
            3 => format!("{} {visits}", PANELS[p]),
            _ => PANELS[p].to_owned(),
        };
        panel(area, &title, bars, p)?;
    }
    root.present()?;
    Ok(())
}

fn panel(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    title: &str,
    bars: &[Bars],
    p: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let top = bars
        .iter()
        .map(|b| b.values[p].0.max(b.values[p].1))
        .max()
        .unwrap_or(1)
        .max(1);
    let n = bars.len() as i32;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(8)
        .x_label_area_size(28)
        .y_label_area_size(56)
        .build_cartesian_2d(0..n * SLOT, 0u64..top + top / 4 + 1)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(TRANSPARENT)
        .x_labels((n * SLOT) as usize)
        .x_label_formatter(&|x| {
            let (i, at) = (x / SLOT, x % SLOT);
            match bars.get(i as usize) {
                Some(b) if at == SLOT / 2 => b.label.clone(),
                _ => String::new(),
            }
        })
        .set_tick_mark_size(LabelAreaPosition::Bottom, 0)
        .x_label_style(("sans-serif", 13))
        .y_label_style(("sans-serif", 12))
        .draw()?;
    for (side, color, name) in [(0, DIRECT, "direct"), (1, GATEWAY, "through the gateway")] {
        let rects = bars.iter().enumerate().map(move |(i, b)| {
            let x0 = i as i32 * SLOT + 2 + side * 3;
            let v = if side == 0 {
                b.values[p].0
            } else {
                b.values[p].1
            };
            Rectangle::new([(x0, 0), (x0 + 3, v)], color.filled())
        });
        chart
            .draw_series(rects)?
            .label(name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
        let values = bars.iter().enumerate().map(move |(i, b)| {
            let x = i as i32 * SLOT + 2 + side * 3;
            let v = if side == 0 {
                b.values[p].0
            } else {
                b.values[p].1
            };
            let style = TextStyle::from(("sans-serif", 11).into_font())
                .pos(Pos::new(HPos::Left, VPos::Bottom));
            Text::new(v.to_string(), (x, v), style)
        });
        chart.draw_series(values)?;
    }
    // One legend, in the first panel: the colours mean the same in every panel.
    if p > 0 {
        return Ok(());
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK.mix(0.3))
        .label_font(("sans-serif", 13))
        .draw()?;
    Ok(())
}
