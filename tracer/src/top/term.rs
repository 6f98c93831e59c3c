//! The terminal while `tracer top` runs: raw mode and the alternate screen, given back on every
//! way out (the guard's drop, and a panic hook for panics), and keys read on a thread of their
//! own so the run loop waits on them like on any other event.

use std::io::{self, Stdout};

use crossterm::{
    cursor,
    event::{self, Event, KeyEvent, KeyEventKind},
    execute,
    terminal::{self, EnterAlternateScreen, LeaveAlternateScreen},
};
use ratatui::{Terminal, backend::CrosstermBackend};
use tokio::sync::mpsc;

pub type Term = Terminal<CrosstermBackend<Stdout>>;

fn restore() {
    let _ = terminal::disable_raw_mode();
    let _ = execute!(io::stdout(), LeaveAlternateScreen, cursor::Show);
}

/// The terminal in raw mode on the alternate screen, until dropped.
pub struct Screen {
    pub term: Term,
}

impl Screen {
    /// Takes over the terminal (stdout must be one).
    pub fn enter() -> io::Result<Screen> {
        use std::io::IsTerminal;
        if !io::stdout().is_terminal() {
            return Err(io::Error::other(
                "tracer top needs a terminal on stdout (use --interval for a log of intervals)",
            ));
        }
        terminal::enable_raw_mode()?;
        if let Err(e) = execute!(io::stdout(), EnterAlternateScreen, cursor::Hide) {
            restore();
            return Err(e);
        }
        // A panic from here on first gives the terminal back, then reports.
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
        match Terminal::new(CrosstermBackend::new(io::stdout())) {
            Ok(term) => Ok(Screen { term }),
            Err(e) => {
                restore();
                Err(e)
            }
        }
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        restore();
        let _ = std::panic::take_hook();
    }
}

/// Key presses, read on a thread of their own (which ends with the process).
pub fn keys() -> mpsc::UnboundedReceiver<KeyEvent> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::Builder::new()
        .name("tracer-keys".into())
        .spawn(move || {
            loop {
                match event::read() {
                    Ok(Event::Key(k)) if k.kind != KeyEventKind::Release => {
                        if tx.send(k).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        })
        .expect("spawning the key reader");
    rx
}
