//! `retrace analyze CAPTURE... --out DIR [--services FILE.yaml]`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `retrace analyze`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub input: Input,
    /// Directory to write the report into (index.html, *.csv, summary.json).
    #[arg(long, short, value_name = "DIR")]
    pub out: PathBuf,
    #[command(flatten)]
    pub objectives: Objectives,
    /// Do not link spans into traces (no spans.csv, traces.csv or waterfalls).
    #[arg(long)]
    pub no_traces: bool,
    /// YAML file overriding the thresholds of the findings engine (Coroot's inspections by
    /// default): see the documentation of `retrace_analyze::findings::config`.
    #[arg(long, value_name = "FILE.yaml")]
    pub findings_config: Option<PathBuf>,
}

/// What every analysis reads (`analyze`, each `export`): the captures, the service naming
/// rules and the time window.
#[derive(clap::Args, Debug)]
pub struct Input {
    /// Capture directories or segment files (several are merged, e.g. one per node).
    #[arg(required = true, value_name = "CAPTURE")]
    pub captures: Vec<PathBuf>,
    /// YAML file naming and merging services, and their latency objectives.
    #[arg(long, value_name = "FILE.yaml")]
    pub services: Option<PathBuf>,
    /// Start of the window: RFC 3339 time, time of day (`14:03:10`), or offset from the
    /// capture start (`+30s`).
    #[arg(long, value_parser = parse_time)]
    pub from: Option<retrace_analyze::TimeSpec>,
    /// End of the window (same forms as --from).
    #[arg(long, value_parser = parse_time)]
    pub to: Option<retrace_analyze::TimeSpec>,
    /// Print nothing but errors (no progress bar, no summary line).
    #[arg(long)]
    pub quiet: bool,
    /// Trust every node's clock as recorded (by default the clock offsets between nodes are
    /// estimated from the connections between them and corrected before the merge).
    #[arg(long)]
    pub no_clock_correction: bool,
}

impl Input {
    /// The analysis options these arguments give.
    pub fn options(&self) -> retrace_analyze::AnalyzeOptions {
        retrace_analyze::AnalyzeOptions {
            services_file: self.services.clone(),
            progress: !self.quiet && std::io::stderr().is_terminal(),
            from: self.from,
            to: self.to,
            no_clock_correction: self.no_clock_correction,
            ..Default::default()
        }
    }

    /// Analyzes the captures (spans and traces included: what the exports are made of).
    pub fn analyze(&self) -> anyhow::Result<retrace_analyze::Analysis> {
        // (The library's errors name the capture or file: no context that would repeat it.)
        Ok(retrace_analyze::analyze(&self.captures, &self.options())?)
    }
}

/// The objectives and alert rules an analysis judges the capture by (`analyze`, `check`).
#[derive(clap::Args, Debug)]
pub struct Objectives {
    /// Service level objectives (the seed's `slo:` YAML, plain or as a ConfigMap); default:
    /// availability 99%, latency 99% faster than 500 ms, for every service.
    #[arg(long, value_name = "FILE.yaml")]
    pub slo: Option<PathBuf>,
    /// Alert rules (the seed's `alerts.yaml`, plain or as a ConfigMap) to evaluate over the
    /// capture's timeline (alerts.csv).
    #[arg(long, value_name = "FILE.yaml")]
    pub alerts: Option<PathBuf>,
    /// A capture whose values `baseline` in alert rules means (default: the first quarter of
    /// this capture).
    #[arg(long, value_name = "CAPTURE")]
    pub baseline: Option<PathBuf>,
}

impl Objectives {
    /// Sets them in `opts`.
    pub fn apply(&self, opts: &mut retrace_analyze::AnalyzeOptions) {
        opts.slo_file.clone_from(&self.slo);
        opts.alerts_file.clone_from(&self.alerts);
        opts.baseline = self.baseline.iter().cloned().collect();
    }
}

fn parse_time(s: &str) -> Result<retrace_analyze::TimeSpec, String> {
    retrace_analyze::TimeSpec::parse(s).map_err(|e| e.to_string())
}

/// Runs `retrace analyze`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut opts = retrace_analyze::AnalyzeOptions {
        no_traces: args.no_traces,
        findings_config: args.findings_config.clone(),
        ..args.input.options()
    };
    args.objectives.apply(&mut opts);
    let analysis = retrace_analyze::analyze(&args.input.captures, &opts)?;
    // (The library's errors name the file: no context that would name it twice.)
    retrace_analyze::write_report(&analysis, &args.out)?;
    if !args.input.quiet {
        eprintln!(
            "{} events, {} services, {} edges, {} requests ({} failed); completeness {:.2}%; \
             {} SLO breaches, {} alerts fired; report: {}",
            analysis.events,
            analysis.services.len(),
            analysis.edges.len(),
            analysis.total_requests,
            analysis.total_errors,
            analysis.completeness * 100.0,
            analysis.slo.breaches.len(),
            analysis.slo.alerts.len(),
            args.out.join("index.html").display()
        );
        // What went wrong, first: the findings worth a look (all in findings.csv).
        let serious: Vec<&retrace_analyze::Finding> = analysis
            .findings
            .iter()
            .filter(|f| f.severity > retrace_analyze::Severity::Info)
            .collect();
        for f in serious.iter().take(8) {
            eprintln!(
                "{} {}: {} — {}",
                f.id,
                f.severity.name(),
                f.summary,
                f.likely_cause
            );
        }
        if serious.len() > 8 {
            eprintln!("… {} more in findings.csv", serious.len() - 8);
        }
    }
    Ok(ExitCode::SUCCESS)
}
