//! The live terminal view of `cgscope top` (ratatui on crossterm): the sampler runs
//! on its own thread and hands over one snapshot per window; this thread draws and
//! reads keys, so the screen answers keys between windows.

use std::{
    sync::mpsc::{self, Receiver, TryRecvError},
    time::Duration,
};

use ratatui::{
    crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers},
    layout::{Constraint, Layout},
    style::{Modifier, Style},
    text::{Line, Text},
    widgets::Paragraph,
    DefaultTerminal, Frame,
};

use super::{header, histograms, line, rows, summary, Sort, COLUMNS};
use crate::{
    sampler::{Sampler, SamplerConfig},
    snapshot::Snapshot,
    text::{escape, Escaped},
};

enum Message {
    /// The probes are attached; the first window has begun. Names of the probes
    /// that are not attached.
    Started(Vec<String>),
    Window(Box<Snapshot>),
    Failed(String),
}

struct App {
    snapshot: Option<Snapshot>,
    missing_probes: Vec<String>,
    pods: bool,
    sort: Sort,
    /// The selected row, by cgroup path: it stays selected when rows move.
    selected: Option<String>,
    details: bool,
    interval: Duration,
}

pub fn run(
    sampling: SamplerConfig,
    interval: Duration,
    pods: bool,
    sort: Sort,
) -> anyhow::Result<()> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut sampler = match Sampler::start(&sampling) {
            Ok(s) => s,
            Err(e) => {
                let _ = tx.send(Message::Failed(format!("{e:#}")));
                return;
            }
        };
        let missing = sampler
            .probes()
            .status()
            .iter()
            .filter(|p| !p.attached)
            .map(|p| p.name.to_owned())
            .collect();
        if tx.send(Message::Started(missing)).is_err() {
            return;
        }
        loop {
            std::thread::sleep(interval);
            let snapshot = Box::new(sampler.sample(None));
            if tx.send(Message::Window(snapshot)).is_err() {
                return; // the screen is closed
            }
        }
    });
    // Attach errors are printed as such, before the screen is taken.
    let missing_probes = match rx.recv() {
        Ok(Message::Started(missing)) => missing,
        Ok(Message::Failed(e)) => anyhow::bail!(e),
        _ => anyhow::bail!("the sampler stopped before its first window"),
    };
    let mut app = App {
        snapshot: None,
        missing_probes,
        pods,
        sort,
        selected: None,
        details: false,
        interval,
    };
    let mut terminal = ratatui::init();
    let result = app.run(&mut terminal, &rx);
    ratatui::restore();
    result
}

impl App {
    fn run(
        &mut self,
        terminal: &mut DefaultTerminal,
        rx: &Receiver<Message>,
    ) -> anyhow::Result<()> {
        // Drawn only after a key, a resize or a new window: the rows are computed
        // on each draw, and an unchanged screen needs none.
        let mut changed = true;
        loop {
            if changed {
                terminal.draw(|f| self.draw(f))?;
                changed = false;
            }
            if event::poll(Duration::from_millis(100))? {
                changed = true;
                match event::read()? {
                    Event::Key(key) if key.kind != KeyEventKind::Release => {
                        let ctrl_c = key.modifiers.contains(KeyModifiers::CONTROL)
                            && key.code == KeyCode::Char('c');
                        if ctrl_c || !self.key(key.code) {
                            return Ok(());
                        }
                    }
                    _ => {} // a resize: the next draw lays out anew
                }
            }
            match rx.try_recv() {
                Ok(Message::Window(s)) => {
                    self.snapshot = Some(*s);
                    changed = true;
                }
                Ok(Message::Failed(e)) => anyhow::bail!(e),
                Ok(Message::Started(_)) | Err(TryRecvError::Empty) => {}
                Err(TryRecvError::Disconnected) => anyhow::bail!("the sampler stopped"),
            }
        }
    }

    /// Handles a key; false to quit.
    fn key(&mut self, code: KeyCode) -> bool {
        match code {
            KeyCode::Char('q') => return false,
            KeyCode::Esc | KeyCode::Backspace if self.details => self.details = false,
            KeyCode::Enter if self.selected.is_some() => self.details = true,
            KeyCode::Up | KeyCode::Char('k') => self.step(-1),
            KeyCode::Down | KeyCode::Char('j') => self.step(1),
            KeyCode::PageUp => self.step(-20),
            KeyCode::PageDown => self.step(20),
            KeyCode::Home => self.step(isize::MIN / 2),
            KeyCode::End => self.step(isize::MAX / 2),
            KeyCode::Left | KeyCode::Char('<') => self.sort = self.sort.moved(-1),
            KeyCode::Right | KeyCode::Char('>') => self.sort = self.sort.moved(1),
            KeyCode::Char('r') => self.sort.descending = !self.sort.descending,
            // htop's keys: P by CPU, M by memory.
            KeyCode::Char('P') => self.sort = Sort::by("cpu").unwrap_or(self.sort),
            KeyCode::Char('M') => self.sort = Sort::by("mem").unwrap_or(self.sort),
            KeyCode::Char('p') => {
                self.pods = !self.pods;
                self.selected = None;
                self.details = false;
            }
            _ => {}
        }
        true
    }

    /// Moves the selection by `by` rows, within the table.
    fn step(&mut self, by: isize) {
        let Some(snapshot) = &self.snapshot else {
            return;
        };
        let rows = rows(snapshot, self.pods, self.sort);
        if rows.is_empty() {
            return;
        }
        let at = self
            .selected
            .as_ref()
            .and_then(|p| rows.iter().position(|r| &r.cgroup.path == p))
            .map_or(if by > 0 { -1 } else { 0 }, |i| i as isize);
        let to = at.saturating_add(by).clamp(0, rows.len() as isize - 1) as usize;
        self.selected = Some(rows[to].cgroup.path.clone());
    }

    fn draw(&self, frame: &mut Frame) {
        let [top, body, keys] = Layout::vertical([
            Constraint::Length(2),
            Constraint::Min(1),
            Constraint::Length(1),
        ])
        .areas(frame.area());
        let Some(snapshot) = &self.snapshot else {
            let waiting = format!(
                "cgscope top: sampling the first {:?} window…",
                self.interval
            );
            frame.render_widget(Paragraph::new(waiting), top);
            return;
        };
        let what = if self.pods { "pods" } else { "containers" };
        let mut status = format!("{what}  sort: {}", self.sort_title());
        if !self.missing_probes.is_empty() {
            status += &format!("  probes not attached: {}", self.missing_probes.join(", "));
        }
        let top_text = Text::from(vec![Line::from(summary(snapshot)), Line::from(status)]);
        frame.render_widget(Paragraph::new(top_text), top);
        let help = if self.details {
            "Esc: back  q: quit"
        } else {
            "↑↓: select  Enter: details  ←→ <>: sort column  r: reverse  P/M: CPU/memory  p: pods/containers  q: quit"
        };
        frame.render_widget(
            Paragraph::new(help).style(Style::new().add_modifier(Modifier::REVERSED)),
            keys,
        );
        if self.details {
            self.draw_details(frame, snapshot, body);
        } else {
            self.draw_table(frame, snapshot, body);
        }
    }

    fn sort_title(&self) -> String {
        let title = self.sort.column.map_or("NAME", |c| COLUMNS[c].title);
        let order = if self.sort.descending {
            "highest first"
        } else {
            "lowest first"
        };
        format!("{title}, {order}")
    }

    fn draw_table(&self, frame: &mut Frame, snapshot: &Snapshot, area: ratatui::layout::Rect) {
        let rows = rows(snapshot, self.pods, self.sort);
        let selected = self
            .selected
            .as_ref()
            .and_then(|p| rows.iter().position(|r| &r.cgroup.path == p));
        // Keep the selected row on screen (one line is the header).
        let visible = (area.height as usize).saturating_sub(1).max(1);
        let first = selected.map_or(0, |s| s.saturating_sub(visible - 1));
        let mut lines = vec![Line::styled(
            header(self.sort),
            Style::new().add_modifier(Modifier::BOLD),
        )];
        if rows.is_empty() {
            lines.push(Line::from(if self.pods {
                "(no pods: p shows containers)"
            } else {
                "(no cgroups)"
            }));
        }
        for (i, row) in rows.iter().enumerate().skip(first).take(visible) {
            let style = if Some(i) == selected {
                Style::new().add_modifier(Modifier::REVERSED)
            } else {
                Style::new()
            };
            lines.push(Line::styled(line(row), style));
        }
        frame.render_widget(Paragraph::new(lines), area);
    }

    fn draw_details(&self, frame: &mut Frame, snapshot: &Snapshot, area: ratatui::layout::Rect) {
        let rows = rows(snapshot, self.pods, self.sort);
        let Some(row) = rows
            .iter()
            .find(|r| Some(&r.cgroup.path) == self.selected.as_ref())
        else {
            frame.render_widget(Paragraph::new("the cgroup is gone (Esc: back)"), area);
            return;
        };
        let c = row.cgroup;
        let mut lines = vec![
            escape(&row.name).into_owned(),
            format!(
                "cgroup {}  id {}  kind {:?}",
                Escaped(&c.path),
                c.id,
                c.kind
            ),
        ];
        if let Some(m) = &c.container {
            let v = |v: &Option<String>| {
                v.as_deref()
                    .map_or_else(|| "-".into(), |v| escape(v).into_owned())
            };
            lines.push(format!(
                "container {}  image {}  pod {}  namespace {}",
                v(&m.id),
                v(&m.image),
                v(&m.pod),
                v(&m.namespace)
            ));
        }
        let cells: Vec<String> = COLUMNS
            .iter()
            .enumerate()
            .map(|(i, col)| format!("{} {}", col.title, super::cell(i, row.values[i])))
            .collect();
        lines.push(cells.join("  "));
        lines.push(String::new());
        let width = (area.width as usize).saturating_sub(30).clamp(10, 60);
        lines.extend(histograms(c, width));
        frame.render_widget(Paragraph::new(lines.join("\n")), area);
    }
}
