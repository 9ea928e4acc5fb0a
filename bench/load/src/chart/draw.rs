//! Drawing a [`Chart`] as SVG with plotters (its SVG backend only: no fonts or bitmaps needed,
//! text is left to the viewer). Axes start at zero, except where the values span more than a
//! factor of 50 (a rate ladder, latencies from 1 to 1,000 ms): those are logarithmic.

use std::path::Path;

use plotters::coord::Shift;
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;

use super::Chart;

const WIDTH: u32 = 760;
const HEIGHT: u32 = 440;

/// A target's colour: the same in every chart.
fn colour(name: &str, i: usize) -> RGBColor {
    let base = match name.split(' ').next() {
        Some("switchboard") => RGBColor(31, 119, 180),
        Some("nchan") => RGBColor(230, 120, 20),
        Some("floor") => RGBColor(110, 110, 110),
        _ => {
            let (r, g, b) = Palette99::pick(i).to_rgba().rgb();
            RGBColor(r, g, b)
        }
    };
    if name.ends_with(" p50") {
        // The p50 line of a target: a lighter shade of its colour.
        let RGBColor(r, g, b) = base;
        let l = |c: u8| c + (255 - c) / 2;
        RGBColor(l(r), l(g), l(b))
    } else {
        base
    }
}

/// Writes `c` as an SVG file at `path`.
pub fn svg(c: &Chart, path: &Path) -> Result<(), String> {
    let root = SVGBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let xs = c.series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let ys = c
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .chain(c.limit.iter().map(|l| l.1));
    let (x0, x1) = span(xs);
    let (y0, y1) = span(ys);
    let log = |lo: f64, hi: f64| lo > 0.0 && hi / lo > 50.0;
    let (lx, ly) = (log(x0, x1), log(y0, y1));
    let xr = 0.0..x1 * 1.05;
    let yr = 0.0..y1 * 1.15;
    let xl = (x0 / 1.3..x1 * 1.3).log_scale();
    let yl = (y0 / 1.5..y1 * 2.0).log_scale();
    match (lx, ly) {
        (false, false) => plot(&root, c, xr, yr),
        (true, false) => plot(&root, c, xl, yr),
        (false, true) => plot(&root, c, xr, yl),
        (true, true) => plot(&root, c, xl, yl),
    }?;
    root.present().map_err(|e| e.to_string())
}

/// Smallest and largest value (1, 1 when there are none).
fn span(v: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = v.fold((f64::INFINITY, 0.0_f64), |(lo, hi), x| {
        (lo.min(x), hi.max(x))
    });
    if lo.is_finite() && hi > 0.0 {
        (lo, hi)
    } else {
        (1.0, 1.0)
    }
}

/// Numbers as people read them on an axis: 19,000 rather than 19000.
pub(super) fn human(v: f64) -> String {
    if v.abs() >= 1000.0 {
        let s = format!("{:.0}", v.abs());
        let mut out = String::new();
        for (i, ch) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(ch);
        }
        if v < 0.0 { format!("-{out}") } else { out }
    } else if v == v.trunc() {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn plot<X, Y>(root: &DrawingArea<SVGBackend, Shift>, c: &Chart, x: X, y: Y) -> Result<(), String>
where
    X: AsRangedCoord<Value = f64>,
    Y: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let err = |e: DrawingAreaErrorKind<_>| e.to_string();
    let mut ch = ChartBuilder::on(root)
        .caption(&c.title, ("sans-serif", 17))
        .margin(14)
        .x_label_area_size(44)
        .y_label_area_size(70)
        .build_cartesian_2d(x, y)
        .map_err(err)?;
    ch.configure_mesh()
        .x_desc(c.x_desc.as_str())
        .y_desc(c.y_desc.as_str())
        .x_label_formatter(&|v| human(*v))
        .y_label_formatter(&|v| human(*v))
        .light_line_style(RGBColor(246, 246, 246))
        .draw()
        .map_err(err)?;
    for (i, s) in c.series.iter().enumerate() {
        let col = colour(&s.name, i);
        ch.draw_series(LineSeries::new(
            s.points.iter().copied(),
            col.stroke_width(2),
        ))
        .map_err(err)?
        .label(s.name.as_str())
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], col.stroke_width(2)));
        ch.draw_series(s.points.iter().map(|p| Circle::new(*p, 3, col.filled())))
            .map_err(err)?;
    }
    if let Some((label, v)) = &c.limit {
        let (x0, x1) = {
            let r = ch.x_range();
            (r.start, r.end)
        };
        let red = RGBColor(200, 30, 30);
        ch.draw_series(DashedLineSeries::new(
            vec![(x0, *v), (x1, *v)],
            6,
            4,
            red.stroke_width(1),
        ))
        .map_err(err)?
        .label(label.as_str())
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], red));
    }
    ch.configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(180, 180, 180))
        .draw()
        .map_err(err)?;
    Ok(())
}
