//! The service map: a layered layout (clients left, backends right) drawn as SVG.
//!
//! Layers are longest paths from the sources after breaking cycles (edges found going back in a
//! depth-first search are reversed for layering only); the order inside each layer comes from
//! repeated barycentre sweeps, which reduce crossings; long edges get virtual nodes so that they
//! take part in the ordering.
//!
//! Edge labels carry one fact a line (protocol and rate, p99, errors, failed connections) and are
//! never cut: the columns move apart until the widest label fits between two boxes. Each label
//! sits in a gap between columns, near the end of its edge away from a fan-out or fan-in and on
//! the side its edge does not come from; labels of one gap that would overlap are moved to the
//! nearest free place.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use super::{escape_html, human_count, human_ms};
use crate::model::{Analysis, Health, Severity};

const BOX_W: f64 = 210.0;
const BOX_H: f64 = 56.0;
const COL_W: f64 = 420.0;
const ROW_H: f64 = 110.0;
const MARGIN: f64 = 40.0;
/// Edge-label font size in px: the size `#service-map .edge-label` sets in html.rs.
const LABEL_FONT: f64 = 11.0;
/// Distance between two lines of an edge label.
const LINE_H: f64 = 14.0;
/// Baseline of a label's first line below the top of its block.
const LABEL_BASELINE: f64 = 11.0;
/// Room kept between a label and the boxes on either side of its gap (arrowheads live there).
const LABEL_SIDE: f64 = 16.0;
/// Room kept between a label and its edge, and between two labels.
const LABEL_SEP: f64 = 4.0;

/// Colour of a health status.
pub(crate) fn colour(h: Health) -> &'static str {
    match h {
        Health::Ok => "#2e9d52",
        Health::Warning => "#d99100",
        Health::Critical => "#d43c3c",
    }
}

/// Colour of a label's text for a health status: a darker shade, legible on white.
fn label_colour(h: Health) -> &'static str {
    match h {
        Health::Ok => "#1e7a3c",
        Health::Warning => "#8f5f00",
        Health::Critical => "#b42323",
    }
}

/// Node positions: layer and order within the layer, for real and virtual nodes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Layout {
    /// Names of real nodes (index = node id).
    pub names: Vec<String>,
    /// Layer of each node (real nodes first, then virtual ones).
    pub layer: Vec<usize>,
    /// Position within its layer.
    pub pos: Vec<usize>,
    /// Number of nodes in each layer.
    pub layer_sizes: Vec<usize>,
    /// For each drawn edge (real ids): the chain of nodes it passes through.
    pub chains: Vec<Vec<usize>>,
}

/// Lays out a directed graph given as edges between names (self-loops ignored).
pub(crate) fn layout(names: &[String], edges: &[(usize, usize)]) -> Layout {
    let n = names.len();
    let edges: Vec<(usize, usize)> = {
        let set: BTreeSet<(usize, usize)> = edges
            .iter()
            .copied()
            .filter(|(a, b)| a != b && *a < n && *b < n)
            .collect();
        set.into_iter().collect()
    };
    let mut succ: Vec<Vec<usize>> = vec![Vec::new(); n];
    for &(a, b) in &edges {
        succ[a].push(b);
    }
    // Break cycles: edges closing a cycle in a DFS (in name order) are reversed for layering.
    let mut state = vec![0u8; n]; // 0 new, 1 on stack, 2 done
    let mut back: BTreeSet<(usize, usize)> = BTreeSet::new();
    let has_pred: Vec<bool> = {
        let mut v = vec![false; n];
        for &(_, b) in &edges {
            v[b] = true;
        }
        v
    };
    let roots: Vec<usize> = (0..n)
        .filter(|&v| !has_pred[v])
        .chain((0..n).filter(|&v| has_pred[v]))
        .collect();
    for r in roots {
        if state[r] != 0 {
            continue;
        }
        let mut stack: Vec<(usize, usize)> = vec![(r, 0)];
        state[r] = 1;
        while let Some(&mut (v, ref mut i)) = stack.last_mut() {
            if *i < succ[v].len() {
                let w = succ[v][*i];
                *i += 1;
                match state[w] {
                    0 => {
                        state[w] = 1;
                        stack.push((w, 0));
                    }
                    1 => {
                        back.insert((v, w));
                    }
                    _ => {}
                }
            } else {
                state[v] = 2;
                stack.pop();
            }
        }
    }
    let dag: Vec<(usize, usize)> = edges
        .iter()
        .map(|&(a, b)| {
            if back.contains(&(a, b)) {
                (b, a)
            } else {
                (a, b)
            }
        })
        .collect();
    // Longest path layering (Kahn order).
    let mut indeg = vec![0usize; n];
    let mut dsucc: Vec<Vec<usize>> = vec![Vec::new(); n];
    for &(a, b) in &dag {
        indeg[b] += 1;
        dsucc[a].push(b);
    }
    let mut layer = vec![0usize; n];
    let mut queue: std::collections::VecDeque<usize> = (0..n).filter(|&v| indeg[v] == 0).collect();
    while let Some(v) = queue.pop_front() {
        for &w in &dsucc[v] {
            layer[w] = layer[w].max(layer[v] + 1);
            indeg[w] -= 1;
            if indeg[w] == 0 {
                queue.push_back(w);
            }
        }
    }
    // Virtual nodes on edges spanning several layers.
    let mut chains = Vec::new();
    let mut all_layer = layer.clone();
    let mut seg_edges: Vec<(usize, usize)> = Vec::new();
    for &(a, b) in &edges {
        let (u, v) = if back.contains(&(a, b)) {
            (b, a)
        } else {
            (a, b)
        };
        let mut chain = vec![u];
        let mut prev = u;
        for l in (layer[u] + 1)..layer[v] {
            let id = all_layer.len();
            all_layer.push(l);
            seg_edges.push((prev, id));
            chain.push(id);
            prev = id;
        }
        seg_edges.push((prev, v));
        chain.push(v);
        if back.contains(&(a, b)) {
            chain.reverse();
        }
        chains.push(chain);
    }
    let total = all_layer.len();
    let layers = all_layer.iter().copied().max().map_or(0, |m| m + 1);
    let mut order: Vec<Vec<usize>> = vec![Vec::new(); layers];
    for v in 0..total {
        order[all_layer[v]].push(v); // real nodes in name order, then virtual ones
    }
    let mut up: Vec<Vec<usize>> = vec![Vec::new(); total];
    let mut down: Vec<Vec<usize>> = vec![Vec::new(); total];
    for &(a, b) in &seg_edges {
        down[a].push(b);
        up[b].push(a);
    }
    let mut pos = vec![0usize; total];
    let set_pos = |order: &Vec<Vec<usize>>, pos: &mut Vec<usize>| {
        for l in order {
            for (i, &v) in l.iter().enumerate() {
                pos[v] = i;
            }
        }
    };
    set_pos(&order, &mut pos);
    let mut best = order.clone();
    let mut best_cross = crossings(&order, &seg_edges, &all_layer, &pos);
    for sweep in 0..12 {
        let downward = sweep % 2 == 0;
        let range: Vec<usize> = if downward {
            (1..layers).collect()
        } else {
            (0..layers.saturating_sub(1)).rev().collect()
        };
        for l in range {
            let nb = if downward { &up } else { &down };
            let mut keyed: Vec<(f64, usize, usize)> = order[l]
                .iter()
                .map(|&v| {
                    let ns = &nb[v];
                    let bary = if ns.is_empty() {
                        pos[v] as f64
                    } else {
                        ns.iter().map(|&w| pos[w] as f64).sum::<f64>() / ns.len() as f64
                    };
                    (bary, pos[v], v)
                })
                .collect();
            keyed.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            order[l] = keyed.into_iter().map(|k| k.2).collect();
            for (i, &v) in order[l].iter().enumerate() {
                pos[v] = i;
            }
        }
        let c = crossings(&order, &seg_edges, &all_layer, &pos);
        if c < best_cross {
            best_cross = c;
            best = order.clone();
        }
    }
    set_pos(&best, &mut pos);
    Layout {
        names: names.to_vec(),
        layer: all_layer,
        pos,
        layer_sizes: best.iter().map(Vec::len).collect(),
        chains,
    }
}

/// Crossings between consecutive layers.
pub(crate) fn crossings(
    order: &[Vec<usize>],
    seg_edges: &[(usize, usize)],
    layer: &[usize],
    pos: &[usize],
) -> usize {
    let mut by_layer: BTreeMap<usize, Vec<(usize, usize)>> = BTreeMap::new();
    for &(a, b) in seg_edges {
        let (a, b) = if layer[a] <= layer[b] { (a, b) } else { (b, a) };
        by_layer.entry(layer[a]).or_default().push((pos[a], pos[b]));
    }
    let _ = order;
    let mut c = 0;
    for es in by_layer.values() {
        for i in 0..es.len() {
            for j in (i + 1)..es.len() {
                let (a, b) = es[i];
                let (x, y) = es[j];
                if (a < x && b > y) || (a > x && b < y) {
                    c += 1;
                }
            }
        }
    }
    c
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max - 1).collect();
        t.push('…');
        t
    }
}

/// Estimated advance width in px of `s` set at `font` px: per-character widths a little above
/// those of DejaVu Sans (what `system-ui` resolves to on a bare Debian), so that an estimate
/// errs on the wide side. Characters outside ASCII count as a full em.
pub(crate) fn text_width(s: &str, font: f64) -> f64 {
    let ems: f64 = s
        .chars()
        .map(|c| match c {
            ' ' | '.' | ',' | ':' | ';' | '·' | '\'' | '!' | '|' | 'i' | 'j' | 'l' | 'I' => 0.34,
            'f' | 't' | 'r' | '/' | '(' | ')' | '[' | ']' | '-' => 0.45,
            'm' | 'w' | 'M' | 'W' | '%' | '@' => 1.0,
            c if c.is_ascii_uppercase() => 0.78,
            c if c.is_ascii() => 0.66,
            _ => 1.0,
        })
        .sum();
    ems * font
}

/// Where a label block sits along its edge, and which x its text is anchored at.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Anchor {
    Start,
    Middle,
    End,
}

impl Anchor {
    fn svg(self) -> &'static str {
        match self {
            Anchor::Start => "start",
            Anchor::Middle => "middle",
            Anchor::End => "end",
        }
    }
}

/// One edge's label: a block of lines in the gap between two columns of boxes.
struct LabelBlock {
    /// Index into the drawn pairs.
    pair: usize,
    /// Gap it is drawn in (between layer `gap` and `gap + 1`).
    gap: usize,
    anchor: Anchor,
    /// The x its lines are anchored at.
    x: f64,
    /// Top of the block.
    top: f64,
    width: f64,
    height: f64,
}

impl LabelBlock {
    fn x_range(&self) -> (f64, f64) {
        match self.anchor {
            Anchor::Start => (self.x, self.x + self.width),
            Anchor::Middle => (self.x - self.width / 2.0, self.x + self.width / 2.0),
            Anchor::End => (self.x - self.width, self.x),
        }
    }
}

/// The lines of an edge label, one fact a line, so that none has to be cut.
fn edge_lines(e: &crate::EdgeStats, secs: f64) -> Vec<String> {
    let mut lines = vec![format!(
        "{} · {}/s",
        e.protocol,
        human_count(e.requests as f64 / secs)
    )];
    if e.p99_ms.is_some() {
        lines.push(format!("p99 {}", human_ms(e.p99_ms)));
    }
    if e.requests > 0 && e.errors > 0 {
        lines.push(format!(
            "{:.1}% errors",
            e.errors as f64 * 100.0 / e.requests as f64
        ));
    }
    if e.failed_connections > 0 {
        lines.push(format!(
            "{} failed connection{}",
            e.failed_connections,
            if e.failed_connections == 1 { "" } else { "s" }
        ));
    }
    lines
}

/// Places the label blocks of one gap, in the order given, each at the free position nearest
/// to the one it asked for (`top`), so that no two blocks overlap.
fn separate(blocks: &mut [LabelBlock], order: &[usize]) {
    let mut placed: Vec<usize> = Vec::new();
    for &i in order {
        let (x0, x1) = blocks[i].x_range();
        let h = blocks[i].height;
        let want = blocks[i].top;
        // Tops this block may not take: too close to a placed block it shares columns with.
        let mut taken: Vec<(f64, f64)> = placed
            .iter()
            .filter(|&&j| {
                let (a0, a1) = blocks[j].x_range();
                a0 < x1 + LABEL_SEP && x0 < a1 + LABEL_SEP
            })
            .map(|&j| {
                (
                    blocks[j].top - LABEL_SEP - h,
                    blocks[j].top + blocks[j].height + LABEL_SEP,
                )
            })
            .collect();
        taken.sort_by(|p, q| p.0.total_cmp(&q.0).then(p.1.total_cmp(&q.1)));
        let mut merged: Vec<(f64, f64)> = Vec::new();
        for (lo, hi) in taken {
            match merged.last_mut() {
                Some(last) if lo < last.1 => last.1 = last.1.max(hi),
                _ => merged.push((lo, hi)),
            }
        }
        // The ends of a merged range are free: take the nearer one (down on a tie).
        blocks[i].top = match merged.iter().find(|&&(lo, hi)| lo < want && want < hi) {
            Some(&(lo, hi)) if want - lo < hi - want => lo,
            Some(&(_, hi)) => hi,
            None => want,
        };
        placed.push(i);
    }
}

/// Renders the service map of `a` as an inline SVG element.
pub(crate) fn render(a: &Analysis) -> String {
    // One drawn edge per client/server pair; protocols listed in its label.
    struct Pair {
        status: Health,
        lines: Vec<String>,
        /// Its findings (above info): their ids make the label's first line, linked.
        findings: Vec<String>,
        /// Its row in the network panel.
        net_row: Option<usize>,
    }
    let mut names: BTreeSet<&str> = BTreeSet::new();
    let mut pairs: BTreeMap<(&str, &str), Pair> = BTreeMap::new();
    let secs = a.window_secs();
    for e in &a.edges {
        names.insert(&e.client);
        names.insert(&e.server);
        let p = pairs
            .entry((e.client.as_str(), e.server.as_str()))
            .or_insert(Pair {
                status: Health::Ok,
                lines: Vec::new(),
                findings: Vec::new(),
                net_row: None,
            });
        p.status = p.status.max(e.status);
        p.lines.extend(edge_lines(e, secs));
    }
    // The findings of each edge: drawn in the worst one's severity, their ids on the label.
    let net_rows = super::findings_html::net_edge_rows(a);
    let mut ids: Vec<String> = Vec::new();
    for ((c, s), p) in pairs.iter_mut() {
        let name = format!("{c} -> {s}");
        p.net_row = net_rows.get(&name).copied();
        let mut found: Vec<String> = Vec::new();
        for f in a.findings.iter().filter(|f| f.edge == name) {
            if f.severity == Severity::Info {
                continue;
            }
            p.status = p.status.max(match f.severity {
                Severity::Critical => Health::Critical,
                _ => Health::Warning,
            });
            found.push(f.id.clone());
        }
        if !found.is_empty() {
            p.lines.insert(0, found.join(" "));
            ids.extend(found.iter().cloned());
            p.findings = found;
        }
    }
    let ids: BTreeSet<String> = ids.into_iter().collect();
    let is_finding = |w: &str| ids.contains(w);
    let names: Vec<String> = names.into_iter().map(str::to_string).collect();
    let index: BTreeMap<&str, usize> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    let pair_list: Vec<((usize, usize), &Pair)> = pairs
        .iter()
        .map(|((c, s), p)| ((index[c], index[s]), p))
        .collect();
    let edge_ids: Vec<(usize, usize)> = pair_list.iter().map(|(k, _)| *k).collect();
    let lay = layout(&names, &edge_ids);
    let max_rows = lay.layer_sizes.iter().copied().max().unwrap_or(1).max(1);
    let layers = lay.layer_sizes.len().max(1);
    // Columns far enough apart for the widest label to fit between two boxes, uncut.
    let label_w: Vec<f64> = pair_list
        .iter()
        .map(|(_, p)| {
            p.lines
                .iter()
                .map(|l| text_width(l, LABEL_FONT))
                .fold(0.0, f64::max)
        })
        .collect();
    let widest = label_w.iter().copied().fold(0.0, f64::max);
    let col_w = COL_W.max((BOX_W + 2.0 * LABEL_SIDE + widest).ceil());
    let width = MARGIN * 2.0 + (layers as f64 - 1.0) * col_w + BOX_W;
    let height = MARGIN * 2.0 + (max_rows as f64 - 1.0) * ROW_H + BOX_H + 30.0;
    let centre = |v: usize| -> (f64, f64) {
        let l = lay.layer[v];
        let rows = lay.layer_sizes.get(l).copied().unwrap_or(1) as f64;
        let top = MARGIN + ((max_rows as f64 - rows) * ROW_H) / 2.0;
        (
            MARGIN + l as f64 * col_w + BOX_W / 2.0,
            top + lay.pos[v] as f64 * ROW_H + BOX_H / 2.0,
        )
    };
    let svc_status: BTreeMap<&str, (Health, String)> = a
        .services
        .iter()
        .map(|s| {
            let sub = if s.requests > 0 {
                format!(
                    "{}/s · p99 {} · {:.1}% err",
                    human_count(s.requests as f64 / secs),
                    human_ms(s.p99_ms),
                    s.error_rate * 100.0
                )
            } else if s.requests_sent > 0 {
                format!(
                    "client · {}/s out",
                    human_count(s.requests_sent as f64 / secs)
                )
            } else {
                "no requests seen".to_string()
            };
            (s.service.as_str(), (s.status, sub))
        })
        .collect();

    // The layout's chains by their real end nodes (it leaves out self-loops, so positions
    // do not line up with `pair_list`).
    let chain_of: BTreeMap<(usize, usize), &Vec<usize>> = lay
        .chains
        .iter()
        .filter_map(|c| Some(((*c.first()?, *c.last()?), c)))
        .collect();

    // Label blocks: each in one gap between columns, on the segment of its edge that crosses
    // it (for an edge over several layers, the least crowded gap), clear of the boxes.
    let mut blocks: Vec<LabelBlock> = Vec::new();
    let mut seg_of: Vec<(usize, usize)> = Vec::new(); // (from, to) chain nodes of each block
    let mut per_gap: BTreeMap<usize, usize> = BTreeMap::new();
    for (k, ((a, b), pair)) in pair_list.iter().enumerate() {
        let Some(chain) = chain_of.get(&(*a, *b)) else {
            continue;
        };
        if chain.len() < 2 || pair.lines.is_empty() {
            continue;
        }
        let seg = chain
            .windows(2)
            .map(|w| (w[0], w[1]))
            .min_by_key(|&(u, v)| {
                let g = lay.layer[u].min(lay.layer[v]);
                per_gap.get(&g).copied().unwrap_or(0)
            });
        let Some((u, v)) = seg else { continue };
        let gap = lay.layer[u].min(lay.layer[v]);
        *per_gap.entry(gap).or_default() += 1;
        blocks.push(LabelBlock {
            pair: k,
            gap,
            anchor: Anchor::Middle,
            x: 0.0,
            top: 0.0,
            width: label_w[k],
            height: pair.lines.len() as f64 * LINE_H,
        });
        seg_of.push((u, v));
    }
    // Labelled segments leaving / entering each node within a gap: labels go to the end of
    // their edge where it has the room (away from a fan-out or a fan-in).
    let mut fan_out: BTreeMap<(usize, usize), usize> = BTreeMap::new();
    let mut fan_in: BTreeMap<(usize, usize), usize> = BTreeMap::new();
    for (blk, &(u, v)) in blocks.iter().zip(&seg_of) {
        *fan_out.entry((blk.gap, u)).or_default() += 1;
        *fan_in.entry((blk.gap, v)).or_default() += 1;
    }
    for (blk, &(u, v)) in blocks.iter_mut().zip(&seg_of) {
        let (p, q) = (centre(u), centre(v));
        let band_l = MARGIN + blk.gap as f64 * col_w + BOX_W + LABEL_SIDE;
        let band_r = MARGIN + (blk.gap + 1) as f64 * col_w - LABEL_SIDE;
        let flat = (p.1 - q.1).abs() < 1.0;
        let outs = fan_out.get(&(blk.gap, u)).copied().unwrap_or(1);
        let ins = fan_in.get(&(blk.gap, v)).copied().unwrap_or(1);
        let rightward = q.0 > p.0;
        let h = blk.height;
        if flat && outs == 1 && ins == 1 {
            // A lone straight edge: centred above it.
            blk.anchor = Anchor::Middle;
            blk.x = (band_l + band_r) / 2.0;
            blk.top = p.1 - LABEL_SEP - h;
        } else {
            // Near the target when it takes no more edges than the source sends, else near
            // the source; on the side of the line the edge does not come from (or go to).
            let near_target = ins <= outs;
            let (at, other) = if near_target { (q, p) } else { (p, q) };
            let flush_right = rightward == near_target;
            blk.anchor = if flush_right {
                Anchor::End
            } else {
                Anchor::Start
            };
            blk.x = if flush_right { band_r } else { band_l };
            blk.top = if other.1 < at.1 - 1.0 {
                at.1 + LABEL_SEP
            } else {
                at.1 - LABEL_SEP - h
            };
        }
    }
    let gaps: BTreeSet<usize> = blocks.iter().map(|b| b.gap).collect();
    for g in gaps {
        let mut order: Vec<usize> = (0..blocks.len()).filter(|&i| blocks[i].gap == g).collect();
        order.sort_by(|&i, &j| blocks[i].top.total_cmp(&blocks[j].top).then(i.cmp(&j)));
        separate(&mut blocks, &order);
    }
    // The drawing grows to hold labels pushed above or below the boxes.
    let min_top = blocks.iter().map(|b| b.top).fold(MARGIN, f64::min);
    let max_bottom = blocks
        .iter()
        .map(|b| b.top + b.height)
        .fold(height, f64::max);
    let view_y = if min_top < MARGIN / 2.0 {
        (min_top - MARGIN / 2.0).floor().min(0.0)
    } else {
        0.0
    };
    let view_h = (max_bottom + MARGIN / 2.0).ceil().max(height) - view_y;

    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg id=\"service-map\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" \
         height=\"{view_h:.0}\" style=\"max-width:100%;height:auto\" viewBox=\"0 {view_y:.0} {width:.0} {view_h:.0}\" role=\"img\" \
         aria-label=\"Service map\">\n<defs>"
    );
    for h in [Health::Ok, Health::Warning, Health::Critical] {
        let _ = write!(
            svg,
            "<marker id=\"arrow-{}\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"7\" \
             markerHeight=\"7\" orient=\"auto-start-reverse\"><path d=\"M0,0L10,5L0,10z\" \
             fill=\"{}\"/></marker>",
            h.name(),
            colour(h)
        );
    }
    svg.push_str("</defs>\n");
    if names.is_empty() {
        svg.push_str(
            "<text x=\"40\" y=\"40\" class=\"muted\">No connections between services were \
             seen.</text>",
        );
    }
    // Edges under the nodes, labels above everything.
    for ((a, b), pair) in pair_list.iter() {
        let Some(chain) = chain_of.get(&(*a, *b)) else {
            continue; // a service calling itself: not drawn
        };
        let pts: Vec<(f64, f64)> = chain.iter().map(|&v| centre(v)).collect();
        if pts.len() < 2 {
            continue;
        }
        let (first, last) = (pts[0], pts[pts.len() - 1]);
        let forward = last.0 > first.0;
        let mut d = String::new();
        let half = BOX_W / 2.0;
        let start = if forward {
            (first.0 + half, first.1)
        } else {
            (first.0 - half, first.1)
        };
        let end = if forward {
            (last.0 - half - 2.0, last.1)
        } else {
            (last.0 + half + 2.0, last.1)
        };
        let mut path_pts = vec![start];
        path_pts.extend_from_slice(&pts[1..pts.len() - 1]);
        path_pts.push(end);
        let _ = write!(d, "M{:.1},{:.1}", path_pts[0].0, path_pts[0].1);
        for w in path_pts.windows(2) {
            let (p, q) = (w[0], w[1]);
            let mx = (p.0 + q.0) / 2.0;
            let _ = write!(
                d,
                " C{:.1},{:.1} {:.1},{:.1} {:.1},{:.1}",
                mx, p.1, mx, q.1, q.0, q.1
            );
        }
        let c = colour(pair.status);
        let path = format!(
            "<path class=\"edge\" d=\"{d}\" fill=\"none\" stroke=\"{c}\" stroke-width=\"{}\" \
             marker-end=\"url(#arrow-{})\"/>",
            if pair.findings.is_empty() { 2 } else { 3 },
            pair.status.name()
        );
        match pair.net_row {
            Some(k) => {
                let _ = writeln!(
                    svg,
                    "<a href=\"#net-edge-{k}\"><title>{} → {}: network health</title>{path}</a>",
                    escape_html(&names[*a]),
                    escape_html(&names[*b])
                );
            }
            None => {
                let _ = writeln!(svg, "{path}");
            }
        }
    }
    for (i, name) in names.iter().enumerate() {
        let (cx, cy) = centre(i);
        let (status, sub) = svc_status
            .get(name.as_str())
            .cloned()
            .unwrap_or((Health::Ok, String::new()));
        let c = colour(status);
        let _ = writeln!(
            svg,
            "<g class=\"node {}\"><title>{}</title><rect x=\"{:.1}\" y=\"{:.1}\" width=\"{BOX_W}\" \
             height=\"{BOX_H}\" rx=\"8\" fill=\"#fff\" stroke=\"{c}\" stroke-width=\"2.5\"/>\
             <rect x=\"{:.1}\" y=\"{:.1}\" width=\"8\" height=\"{BOX_H}\" rx=\"3\" fill=\"{c}\"/>\
             <text class=\"node-name\" x=\"{:.1}\" y=\"{:.1}\">{}</text>\
             <text class=\"node-sub\" x=\"{:.1}\" y=\"{:.1}\">{}</text></g>",
            status.name(),
            escape_html(name),
            cx - BOX_W / 2.0,
            cy - BOX_H / 2.0,
            cx - BOX_W / 2.0,
            cy - BOX_H / 2.0,
            cx - BOX_W / 2.0 + 16.0,
            cy - 4.0,
            escape_html(&truncate(name, 26)),
            cx - BOX_W / 2.0 + 16.0,
            cy + 15.0,
            escape_html(&truncate(&sub, 34)),
        );
    }
    for blk in &blocks {
        let ((a, b), pair) = pair_list[blk.pair];
        let _ = write!(
            svg,
            "<g class=\"edge-label-block\"><title>{} → {}</title>",
            escape_html(&names[a]),
            escape_html(&names[b])
        );
        let c = label_colour(pair.status);
        for (i, line) in pair.lines.iter().enumerate() {
            let y = blk.top + i as f64 * LINE_H + LABEL_BASELINE;
            // the findings' ids, each a link to its finding
            let text = if i == 0 && !pair.findings.is_empty() {
                line.split(' ')
                    .map(|w| {
                        if is_finding(w) {
                            format!(
                                "<a href=\"#finding-{0}\"><tspan font-weight=\"700\">{0}</tspan></a>",
                                escape_html(w)
                            )
                        } else {
                            escape_html(w)
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            } else {
                escape_html(line)
            };
            let _ = write!(
                svg,
                "<text class=\"edge-label\" x=\"{:.1}\" y=\"{y:.1}\" text-anchor=\"{}\" \
                 fill=\"{c}\">{text}</text>",
                blk.x,
                blk.anchor.svg(),
            );
        }
        svg.push_str("</g>\n");
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn edge(client: &str, server: &str, status: Health) -> crate::EdgeStats {
        crate::EdgeStats {
            client: client.into(),
            server: server.into(),
            protocol: "http".into(),
            connections: 1,
            failed_connections: 0,
            requests: 10,
            errors: 0,
            p50_ms: Some(1.0),
            p95_ms: Some(2.0),
            p99_ms: Some(3.0),
            retransmits: 0,
            bytes_sent: 100,
            bytes_received: 200,
            status,
            reasons: Vec::new(),
            rate_per_s: 1.0,
            server_p50_ms: None,
            server_p99_ms: None,
        }
    }

    /// A rectangle in SVG user units.
    #[derive(Debug, Clone, Copy)]
    struct Bounds {
        x0: f64,
        y0: f64,
        x1: f64,
        y1: f64,
    }

    impl Bounds {
        fn meets(&self, o: &Bounds) -> bool {
            self.x0 < o.x1 && o.x0 < self.x1 && self.y0 < o.y1 && o.y0 < self.y1
        }
    }

    fn attr(tag: &str, name: &str) -> String {
        let key = format!(" {name}=\"");
        let at = tag.find(&key).unwrap_or_else(|| panic!("{name} in {tag}")) + key.len();
        tag[at..at + tag[at..].find('"').expect("closing quote")].to_string()
    }

    fn num(tag: &str, name: &str) -> f64 {
        attr(tag, name).parse().expect("a number")
    }

    fn unescape(s: &str) -> String {
        s.replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&#39;", "'")
            .replace("&amp;", "&")
    }

    /// Node boxes drawn (outer rect of each node, with half its stroke).
    fn node_boxes(svg: &str) -> Vec<Bounds> {
        svg.split("<g class=\"node ")
            .skip(1)
            .map(|g| {
                let rect = &g[g.find("<rect ").expect("rect")..];
                let rect = &rect[..rect.find("/>").expect("end")];
                let (x, y) = (num(rect, "x"), num(rect, "y"));
                let (w, h) = (num(rect, "width"), num(rect, "height"));
                Bounds {
                    x0: x - 1.25,
                    y0: y - 1.25,
                    x1: x + w + 1.25,
                    y1: y + h + 1.25,
                }
            })
            .collect()
    }

    /// Edge labels drawn: per block, each line's text and estimated ink box (glyphs reach
    /// 0.8 em above the baseline and 0.25 em below it; the white halo adds 2 px around).
    fn label_blocks(svg: &str) -> Vec<Vec<(String, Bounds)>> {
        svg.split("<g class=\"edge-label-block\">")
            .skip(1)
            .map(|g| {
                let g = &g[..g.find("</g>").expect("block end")];
                g.split("<text class=\"edge-label\"")
                    .skip(1)
                    .map(|t| {
                        let open = &t[..t.find('>').expect("tag end")];
                        let body = &t[open.len() + 1..t.find("</text>").expect("text end")];
                        let text = unescape(body);
                        let w = text_width(&text, LABEL_FONT);
                        let (x, y) = (num(open, "x"), num(open, "y"));
                        let x0 = match attr(open, "text-anchor").as_str() {
                            "start" => x,
                            "middle" => x - w / 2.0,
                            "end" => x - w,
                            other => panic!("anchor {other}"),
                        };
                        let b = Bounds {
                            x0: x0 - 2.0,
                            y0: y - 0.8 * LABEL_FONT - 2.0,
                            x1: x0 + w + 2.0,
                            y1: y + 0.25 * LABEL_FONT + 2.0,
                        };
                        (text, b)
                    })
                    .collect()
            })
            .collect()
    }

    /// Checks that no label covers a node box or a label of another block, and that every
    /// label is inside the drawing; returns the labels' lines.
    fn check_labels(svg: &str) -> Vec<String> {
        let nodes = node_boxes(svg);
        let blocks = label_blocks(svg);
        let view: Vec<f64> = attr(svg, "viewBox")
            .split(' ')
            .map(|v| v.parse().expect("viewBox number"))
            .collect();
        let drawing = Bounds {
            x0: view[0],
            y0: view[1],
            x1: view[0] + view[2],
            y1: view[1] + view[3],
        };
        for (i, blk) in blocks.iter().enumerate() {
            for (text, b) in blk {
                assert!(!text.contains('…'), "cut label {text:?}");
                assert!(
                    b.x0 >= drawing.x0
                        && b.y0 >= drawing.y0
                        && b.x1 <= drawing.x1
                        && b.y1 <= drawing.y1,
                    "label {text:?} {b:?} outside the drawing {drawing:?}"
                );
                for n in &nodes {
                    assert!(!b.meets(n), "label {text:?} {b:?} over node box {n:?}");
                }
                for other in &blocks[i + 1..] {
                    for (t2, b2) in other {
                        assert!(
                            !b.meets(b2),
                            "labels {text:?} {b:?} and {t2:?} {b2:?} overlap"
                        );
                    }
                }
            }
        }
        blocks.into_iter().flatten().map(|(t, _)| t).collect()
    }

    fn service(name: &str, status: Health) -> crate::ServiceStats {
        crate::ServiceStats {
            service: name.into(),
            instances: 1,
            requests: 1_000,
            errors: 0,
            error_rate: 0.0,
            p50_ms: Some(1.0),
            p95_ms: Some(5.0),
            p99_ms: Some(12.0),
            status,
            reasons: Vec::new(),
            kind: "exe".into(),
            executables: Vec::new(),
            ports: Vec::new(),
            requests_sent: 0,
            calls: 0,
            failed_connections: 0,
            latency_objective_ms: 500.0,
        }
    }

    /// The api-down map (client → nginx → api → {postgres, redis, users}) with every fact an
    /// edge can show, in wide numbers.
    fn api_down_like() -> Analysis {
        let mut edges = Vec::new();
        let mut e = edge("client", "nginx", Health::Critical);
        e.requests = 960_000;
        e.errors = 330_123;
        e.p99_ms = Some(20.5);
        edges.push(e);
        let mut e = edge("nginx", "api", Health::Critical);
        e.requests = 961_000;
        e.errors = 330_456;
        e.failed_connections = 12_345_678_901_234;
        e.p99_ms = Some(1234.5);
        edges.push(e);
        for (server, proto) in [
            ("postgres", "postgres"),
            ("redis", "redis"),
            ("users", "http"),
            ("users", "grpc"),
        ] {
            let mut e = edge("api", server, Health::Warning);
            e.protocol = proto.into();
            e.requests = 3_435_000;
            e.errors = 17;
            e.failed_connections = 4_321;
            e.p99_ms = Some(0.322);
            edges.push(e);
        }
        Analysis {
            services: ["api", "client", "nginx", "postgres", "redis", "users"]
                .iter()
                .map(|s| service(s, Health::Ok))
                .collect(),
            edges,
            window_start_ns: 0,
            window_end_ns: 24_700_000_000,
            ..Default::default()
        }
    }

    #[test]
    fn edges_with_findings_are_drawn_in_their_severity_and_link_to_them() {
        let mut a = api_down_like();
        a.findings = vec![
            crate::model::Finding {
                id: "F2".into(),
                severity: Severity::Critical,
                edge: "api -> redis".into(),
                ..Default::default()
            },
            crate::model::Finding {
                id: "F3".into(),
                severity: Severity::Info,
                edge: "api -> postgres".into(),
                ..Default::default()
            },
        ];
        a.tcp = vec![crate::model::TcpPoint {
            client: "api".into(),
            server: "redis".into(),
            ..Default::default()
        }];
        let svg = render(&a);
        // the edge: critical, thicker, its path a link to its network-health row
        assert!(
            svg.contains(
                "<a href=\"#net-edge-0\"><title>api → redis: network health</title><path \
                 class=\"edge\" d=\""
            ),
            "{svg}"
        );
        let redis_path = svg
            .split("<a href=\"#net-edge-0\">")
            .nth(1)
            .and_then(|s| s.split("</a>").next())
            .expect("linked path");
        assert!(redis_path.contains(&format!(
            "stroke=\"{}\" stroke-width=\"3\"",
            colour(Health::Critical)
        )));
        // its label opens with the finding's id, a link to it; info findings are not marked
        assert!(svg.contains("<a href=\"#finding-F2\"><tspan font-weight=\"700\">F2</tspan></a>"));
        assert!(!svg.contains("#finding-F3"));
        // the other edges are unchanged
        assert_eq!(svg.matches("stroke-width=\"3\"").count(), 1);
    }

    #[test]
    fn every_fact_of_an_edge_label_is_shown_in_full() {
        let svg = render(&api_down_like());
        let lines = check_labels(&svg);
        for want in [
            "http · 38.9k/s",
            "p99 1.23 s",
            "34.4% errors",
            "12345678901234 failed connections",
            "p99 20.5 ms",
            "postgres · 139.1k/s",
            "p99 322 µs",
            "0.0% errors",
            "4321 failed connections",
            "grpc · 139.1k/s",
        ] {
            assert!(lines.iter().any(|l| l == want), "{want:?} not in {lines:?}");
        }
        // One line per fact: protocol and rate, p99, errors, failed connections; the pair
        // api → users carries two protocols.
        assert_eq!(lines.len(), 3 + 4 + 4 * 4, "{lines:?}");
        assert!(!svg.contains('…'), "nothing in the map is cut here");
    }

    #[test]
    fn labels_of_a_fan_out_clear_the_boxes_and_each_other() {
        let a = api_down_like();
        let svg = render(&a);
        check_labels(&svg);
        assert_eq!(label_blocks(&svg).len(), 5);
        assert_eq!(node_boxes(&svg).len(), 6);
        // The columns moved apart for the widest line rather than cutting it.
        let widest = text_width("12345678901234 failed connections", LABEL_FONT);
        assert!(
            BOX_W + 2.0 * LABEL_SIDE + widest > COL_W,
            "the test needs a wide label"
        );
        let xs: BTreeSet<i64> = node_boxes(&svg).iter().map(|b| b.x0 as i64).collect();
        let xs: Vec<i64> = xs.into_iter().collect();
        assert!(
            (xs[1] - xs[0]) as f64 >= BOX_W + 2.0 * LABEL_SIDE + widest,
            "{xs:?}"
        );
        // Same input, same bytes.
        assert_eq!(svg, render(&a));
    }

    #[test]
    fn labels_never_collide_in_random_maps() {
        // Fan-outs, fan-ins, edges over several layers, cycles and self-loops, with labels of
        // one to eight lines: no label is cut, covers a box or another label.
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _ in 0..150 {
            let n = 2 + next(11) as usize;
            let names: Vec<String> = (0..n).map(|i| format!("svc-{i}")).collect();
            let mut edges = Vec::new();
            for _ in 0..(1 + next(3 * n as u64)) {
                let (c, s) = (next(n as u64) as usize, next(n as u64) as usize);
                let mut e = edge(&names[c], &names[s], Health::Ok);
                e.protocol =
                    ["http", "postgres", "redis", "mysql", "grpc"][next(5) as usize].into();
                e.requests = next(10_000_000);
                e.errors = if next(2) == 0 {
                    0
                } else {
                    next(e.requests + 1)
                };
                e.failed_connections = match next(6) {
                    0 => next(u64::MAX),
                    1 | 2 => next(1_000),
                    _ => 0,
                };
                e.p99_ms = if next(4) == 0 {
                    None
                } else {
                    Some(next(100_000) as f64 / 7.0)
                };
                edges.push(e);
            }
            let a = Analysis {
                edges,
                window_start_ns: 0,
                window_end_ns: 10_000_000_000,
                ..Default::default()
            };
            let svg = render(&a);
            let lines = check_labels(&svg);
            let drawn: BTreeSet<(&str, &str)> = a
                .edges
                .iter()
                .filter(|e| e.client != e.server)
                .map(|e| (e.client.as_str(), e.server.as_str()))
                .collect();
            let want: usize = a
                .edges
                .iter()
                .filter(|e| drawn.contains(&(e.client.as_str(), e.server.as_str())))
                .map(|e| edge_lines(e, a.window_secs()).len())
                .sum();
            assert_eq!(lines.len(), want, "every fact of every drawn edge: {svg}");
        }
    }

    #[test]
    fn label_font_matches_the_report_css() {
        let css = include_str!("html.rs");
        let rule = format!("#service-map .edge-label{{font-size:{LABEL_FONT}px");
        assert!(css.contains(&rule), "html.rs sets {rule}");
    }

    #[test]
    fn label_text_is_escaped() {
        let mut e = edge("a<b>", "c&d", Health::Ok);
        e.protocol = "<script>x</script>".into();
        let a = Analysis {
            edges: vec![e],
            window_start_ns: 0,
            window_end_ns: 1_000_000_000,
            ..Default::default()
        };
        let svg = render(&a);
        assert!(!svg.contains("<script>"), "{svg}");
        assert!(
            svg.contains("&lt;script&gt;x&lt;/script&gt; · 10/s"),
            "{svg}"
        );
        assert!(svg.contains("<title>a&lt;b&gt; → c&amp;d</title>"), "{svg}");
        check_labels(&svg);
    }

    #[test]
    fn a_service_calling_itself_is_left_out_of_the_map() {
        // The self-loop sorts between the other pairs: every edge after it must still be
        // drawn with its own chain (once, a panic: the layout leaves self-loops out).
        let a = Analysis {
            edges: vec![
                edge("client", "nginx", Health::Ok),
                edge("nginx", "api", Health::Critical),
                edge("nginx", "nginx", Health::Ok),
                edge("nginx", "zeta", Health::Warning),
            ],
            window_start_ns: 0,
            window_end_ns: 10_000_000_000,
            ..Default::default()
        };
        let svg = render(&a);
        assert!(svg.contains("marker-end=\"url(#arrow-critical)\""), "{svg}");
        assert!(svg.contains("marker-end=\"url(#arrow-warning)\""), "{svg}");
    }

    #[test]
    fn layers_follow_longest_paths() {
        // curl → nginx → api → redis, api → postgres, curl → api (a shortcut).
        let n = names(&["api", "curl", "nginx", "postgres", "redis"]);
        let e = [(1, 2), (2, 0), (0, 4), (0, 3), (1, 0)];
        let l = layout(&n, &e);
        assert_eq!(&l.layer[..5], &[2, 0, 1, 3, 3]);
        assert_eq!(l.layer_sizes.len(), 4);
        // The shortcut curl → api passes through one virtual node in layer 1.
        let shortcut = l
            .chains
            .iter()
            .find(|c| c[0] == 1 && c[c.len() - 1] == 0)
            .expect("edge");
        assert_eq!(shortcut.len(), 3);
        assert_eq!(l.layer[shortcut[1]], 1);
    }

    #[test]
    fn cycles_do_not_hang_and_still_layer() {
        let n = names(&["a", "b", "c"]);
        let l = layout(&n, &[(0, 1), (1, 2), (2, 0), (1, 1)]);
        assert_eq!(l.layer_sizes.iter().sum::<usize>(), l.layer.len());
        assert!(l.layer[..3].contains(&0));
    }

    #[test]
    fn barycentres_remove_avoidable_crossings() {
        // Two independent chains given in an order that crosses: a→y, b→x with x<y by name.
        let n = names(&["a", "b", "x", "y"]);
        let e = [(0, 3), (1, 2)];
        let l = layout(&n, &e);
        // After ordering, a and y share a row index, and b and x do.
        assert_eq!(l.pos[0], l.pos[3]);
        assert_eq!(l.pos[1], l.pos[2]);
    }
}
