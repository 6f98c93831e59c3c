//! `tracer top`'s place in the run loop: its screen, its state and its keys.

use std::time::Duration;

use anyhow::{Context as _, Result};

use crate::{
    summary::Summary,
    top::{self, KeyAction, TopState, term::Screen},
};

/// The next key of `tracer top`; never, without it.
pub(super) async fn next_key(top: Option<&mut TopUi>) -> crossterm::event::KeyEvent {
    match top {
        Some(ui) => match ui.keys.recv().await {
            Some(k) => k,
            None => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

/// `tracer top`'s screen, state and keys.
pub(super) struct TopUi {
    pub(super) screen: Screen,
    pub(super) state: TopState,
    pub(super) keys: tokio::sync::mpsc::UnboundedReceiver<crossterm::event::KeyEvent>,
}

impl TopUi {
    pub(super) fn enter() -> Result<Self> {
        let screen = Screen::enter().context("taking over the terminal")?;
        let mut ui = TopUi {
            screen,
            state: TopState::default(),
            keys: top::term::keys(),
        };
        ui.state.message = Some("tracer: attached; the first refresh comes in a moment".into());
        ui.draw();
        Ok(ui)
    }

    pub(super) fn draw(&mut self) {
        let state = &self.state;
        let _ = self.screen.term.draw(|f| top::view::draw(f, state));
    }

    pub(super) fn update(&mut self, summary: &Summary, at: Duration) {
        self.state.update(summary, at.as_secs_f64());
        if self
            .state
            .message
            .as_deref()
            .is_some_and(|m| m.contains("first refresh"))
        {
            self.state.message = None;
        }
        self.draw();
    }

    pub(super) fn say(&mut self, message: String) {
        self.state.message = Some(message);
        self.draw();
    }

    pub(super) fn key(&mut self, k: crossterm::event::KeyEvent) -> KeyAction {
        let height = self.screen.term.size().map_or(24, |s| s.height);
        let action = self
            .state
            .key(k, top::view::page(height, self.state.detail));
        self.draw();
        action
    }
}
