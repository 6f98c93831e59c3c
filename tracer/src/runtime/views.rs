//! What a run shows while it goes on: `--interval` lines, `tracer top`'s screen, the
//! `--listen` server; and the snapshotter their summaries are made with.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};

use super::{RunConfig, ui::TopUi};
use crate::{
    facts::TargetFacts,
    output::Sink,
    periodic::Intervals,
    runtime::snapshot::Snapshotter,
    serve::{Published, Server},
    summary::Summary,
};

/// How often a `--listen` run publishes what it serves, without `--interval`.
const SERVE_PERIOD: Duration = Duration::from_secs(1);

/// The live views, and when they are refreshed.
pub(super) struct Views {
    pub snapshotter: Snapshotter,
    /// `--interval`: a summary of what changed, on stderr and in `--jsonl`.
    pub live: Option<Intervals>,
    /// `--listen`: the server and `--max-metric-sites`.
    pub server: Option<(Server, usize)>,
    /// The server's requests for a fresh summary.
    pub refresh_requests: Option<tokio::sync::mpsc::UnboundedReceiver<()>>,
    pub top: Option<TopUi>,
    /// The refresh period of the views there are.
    pub interval: Option<tokio::time::Interval>,
    max_sites: usize,
    page_size: u64,
    /// When the server was last given a summary.
    published: Option<Instant>,
}

impl Views {
    /// Starts every view asked for; `tracer top` takes over the terminal last, once everything
    /// that can fail to start has started.
    pub(super) fn start(
        cfg: &RunConfig,
        facts: TargetFacts,
        jsonl: Option<Sink>,
        text: bool,
        listener: Option<(std::net::TcpListener, Option<String>, usize)>,
        page_size: u64,
    ) -> Result<Views> {
        let pid = facts.pid;
        let header = format!(
            "tracer: pid {} ({})",
            facts.pid,
            facts.command.first().map_or("", String::as_str)
        );
        let mut snapshotter = Snapshotter::new(
            facts,
            cfg.max_sites,
            cfg.min_age.as_nanos().min(u128::from(u64::MAX)) as u64,
            cfg.mode.name(),
        );
        snapshotter.kernel_stacks = cfg.kernel_stacks;
        snapshotter.wrappers = cfg.wrappers.clone();
        snapshotter.suppressions = cfg.suppressions.clone();
        snapshotter.text_sites = cfg.text_sites;
        let live = match cfg.interval {
            // The interval blocks would write over top's screen.
            Some(_) => Some(Intervals::new(
                jsonl,
                cfg.jsonl_max,
                text && !cfg.top,
                cfg.max_sites,
                header,
            )?),
            None => None,
        };
        let (server, refresh_requests) = match listener {
            Some((listener, token, max_metric_sites)) => {
                let readers = crate::process::target::uids(pid as i32);
                let (server, requests) = serve_on(listener, token, readers)?;
                (Some((server, max_metric_sites)), Some(requests))
            }
            None => (None, None),
        };
        let interval = cfg
            .interval
            .or((server.is_some() || cfg.top).then_some(SERVE_PERIOD))
            .map(|period| {
                let mut t = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                t
            });
        let top = if cfg.top { Some(TopUi::enter()?) } else { None };
        Ok(Views {
            snapshotter,
            live,
            server,
            refresh_requests,
            top,
            interval,
            max_sites: cfg.max_sites,
            page_size,
            published: None,
        })
    }

    /// Marks the moment tracing began.
    pub(super) fn begin(&mut self) -> Instant {
        let started = Instant::now();
        self.snapshotter.started = started;
        started
    }

    /// Shows a summary as of `at` in every view.
    pub(super) fn refresh(&mut self, summary: Summary, at: Duration) {
        if let Some(live) = self.live.as_mut() {
            live.interval(&summary, at, false);
        }
        if let Some(ui) = self.top.as_mut() {
            ui.update(&summary, at);
        }
        self.publish(summary);
        // A full period from now: a slow summary (the first one symbolizes) does not make the
        // next interval a short one.
        if let Some(i) = self.interval.as_mut() {
            i.reset();
        }
    }

    /// When a summary was last published.
    pub(super) fn published_at(&self) -> Option<Instant> {
        self.published
    }

    /// What the server serves from now on.
    pub(super) fn publish(&mut self, summary: Summary) {
        self.published = Some(Instant::now());
        if let Some((server, max_metric_sites)) = &self.server {
            server.publish(Published {
                summary,
                max_sites: self.max_sites,
                max_metric_sites: *max_metric_sites,
                page_size: self.page_size,
                taken: std::time::SystemTime::now(),
                html: std::sync::OnceLock::new(),
            });
        }
    }

    /// A line for the user: on top's screen, or on stderr.
    pub(super) fn say(&mut self, said: String) {
        match self.top.as_mut() {
            Some(top) => top.say(said),
            None => eprintln!("{said}"),
        }
    }
}

/// Starts the HTTP server and says where it serves.
fn serve_on(
    listener: std::net::TcpListener,
    token: Option<String>,
    readers: Vec<u32>,
) -> Result<(Server, tokio::sync::mpsc::UnboundedReceiver<()>)> {
    let (server, requests) =
        Server::start(listener, token, readers).context("starting the HTTP server")?;
    let addr = server.addr;
    if !addr.ip().is_loopback() {
        eprintln!(
            "tracer: warning: serving on {addr}, beyond this machine: the endpoints expose the \
             target's symbols and memory layout"
        );
    }
    eprintln!(
        "tracer: serving http://{addr}/ (/metrics, /debug/pprof/heap, /debug/pprof/allocs, /report.html)"
    );
    Ok((server, requests))
}
