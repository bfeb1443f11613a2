//! What a fleet logs, through a capturing `tracing` subscriber, on `MemoryStore` with paused
//! time: log lines sit in spans that name the manager's instance, its worker id and its
//! leader term; ids print as plain strings; reasons are what they are; repeats are
//! rate-limited.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use parti_core::config::Config;
use parti_core::decide::ManagerState;
use parti_core::runtime::{Manager, PartitionSource, StaticSource};
use parti_core::store::MemoryStore;
use parti_strategy::{Partition, Sticky};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_core::span::Current;

/// One captured event: its level, its fields (`message` among them) and the spans it was
/// in, outermost first, each as `name{field=value …}`.
#[derive(Debug, Clone)]
struct Line {
    level: Level,
    fields: String,
    spans: Vec<String>,
}

#[derive(Default)]
struct Fields(String);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, " {}={value:?}", field.name());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        let _ = write!(self.0, " {}={value}", field.name());
    }
}

/// A span: how it prints, its parent, its metadata.
type SpanData = (String, Option<u64>, &'static Metadata<'static>);

/// A subscriber that keeps every event with the spans around it. The tests run on one
/// thread (tokio's current-thread runtime), so one stack of entered spans is enough.
#[derive(Clone, Default)]
struct Capture {
    spans: Arc<Mutex<HashMap<u64, SpanData>>>,
    stack: Arc<Mutex<Vec<u64>>>,
    lines: Arc<Mutex<Vec<Line>>>,
    next: Arc<AtomicU64>,
}

impl Subscriber for Capture {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.target().starts_with("parti")
    }
    fn new_span(&self, attrs: &Attributes<'_>) -> Id {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        let parent = attrs
            .parent()
            .map(Id::into_u64)
            .or_else(|| self.stack.lock().unwrap().last().copied());
        let text = format!("{}{{{}}}", attrs.metadata().name(), fields.0.trim());
        self.spans
            .lock()
            .unwrap()
            .insert(id, (text, parent, attrs.metadata()));
        Id::from_u64(id)
    }
    fn current_span(&self) -> Current {
        let current = self.stack.lock().unwrap().last().copied();
        match current.and_then(|id| Some((id, self.spans.lock().unwrap().get(&id)?.2))) {
            Some((id, metadata)) => Current::new(Id::from_u64(id), metadata),
            None => Current::none(),
        }
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let spans = self.spans.lock().unwrap();
        let mut chain = Vec::new();
        let mut current = self.stack.lock().unwrap().last().copied();
        while let Some(id) = current {
            let (text, parent, _) = &spans[&id];
            chain.push(text.clone());
            current = *parent;
        }
        chain.reverse();
        self.lines.lock().unwrap().push(Line {
            level: *event.metadata().level(),
            fields: fields.0,
            spans: chain,
        });
    }
    fn enter(&self, id: &Id) {
        self.stack.lock().unwrap().push(id.into_u64());
    }
    fn exit(&self, id: &Id) {
        let mut stack = self.stack.lock().unwrap();
        if let Some(at) = stack.iter().rposition(|entered| *entered == id.into_u64()) {
            stack.remove(at);
        }
    }
}

impl Capture {
    fn lines(&self) -> Vec<Line> {
        self.lines.lock().unwrap().clone()
    }
}

async fn stable(managers: &[Manager<MemoryStore>]) {
    for manager in managers {
        manager
            .wait_state(ManagerState::Stable, Duration::from_secs(120))
            .await
            .unwrap();
    }
}

/// Waits (bounded, on the paused clock) until the managers together own `partitions`
/// partitions and are all `Stable`.
async fn settled_on(managers: &[Manager<MemoryStore>], partitions: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while managers.iter().map(|m| m.assignment().len()).sum::<usize>() != partitions {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never owned {partitions}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stable(managers).await;
}

#[tokio::test(start_paused = true)]
async fn log_lines_carry_worker_and_term_spans_and_name_reasons_plainly() {
    let capture = Capture::default();
    let _guard = tracing::subscriber::set_default(capture.clone());
    let store = MemoryStore::new();
    let source = StaticSource::numbered("p", 12).unwrap();
    let mut managers = Vec::new();
    for _ in 0..3 {
        let manager = Manager::builder(store.connect(), source.clone(), Sticky::default())
            .start()
            .await
            .unwrap();
        managers.push(manager);
    }
    stable(&managers).await;
    // A graceful leave of a follower: a leave, not an emergency.
    let at = managers.iter().position(|m| !m.is_leader()).unwrap();
    let leaving = managers.remove(at);
    let leaving_id = leaving.worker_id();
    leaving.stop().await.unwrap();
    settled_on(&managers, 12).await;
    let leader = managers.iter().find(|m| m.is_leader()).unwrap();
    let (leader_id, term) = (leader.worker_id(), leader.leader().unwrap().term);

    let lines = capture.lines();
    let computed: Vec<&Line> = lines
        .iter()
        .filter(|l| l.fields.contains("message=assignment computed"))
        .collect();
    assert!(computed.len() >= 2, "{lines:#?}");
    for line in &computed {
        let spans = line.spans.join(":");
        assert!(spans.starts_with("parti{instance="), "{spans}");
        assert!(
            spans.contains(&format!("session{{worker={leader_id}}}")),
            "the leader's worker id: {spans}"
        );
        assert!(spans.contains(&format!("term{{term={term}}}")), "{spans}");
    }
    assert!(
        computed[0].fields.contains("reason=cold_start"),
        "{:?}",
        computed[0]
    );
    let last = computed.last().unwrap();
    assert!(
        last.fields.contains("reason=leave"),
        "a graceful leave: {last:?}"
    );
    let change = lines
        .iter()
        .rfind(|l| l.fields.contains("message=topology change"))
        .unwrap();
    assert!(
        change.fields.contains(&format!("left={leaving_id} "))
            || change.fields.ends_with(&format!("left={leaving_id}")),
        "ids print plainly: {change:?}"
    );
    assert!(change.fields.contains("kind=leave"), "{change:?}");
    assert!(
        !lines.iter().any(|l| l.fields.contains("WorkerId(")),
        "no Debug-printed ids"
    );
    assert!(
        !lines.iter().any(|l| l.level <= Level::WARN),
        "a calm fleet warns of nothing: {:#?}",
        lines
            .iter()
            .filter(|l| l.level <= Level::WARN)
            .collect::<Vec<_>>()
    );
    for manager in managers {
        manager.stop().await.unwrap();
    }
}

/// A source that lists one partition twice.
#[derive(Debug, Clone)]
struct Duplicated;

impl PartitionSource for Duplicated {
    async fn partitions(&self) -> Result<Vec<Partition>, parti_core::store::BoxError> {
        Ok(["a", "b", "a"]
            .into_iter()
            .map(|id| Partition::new(id).unwrap())
            .collect())
    }
}

#[tokio::test(start_paused = true)]
async fn a_source_listing_a_partition_twice_is_reported_then_only_counted() {
    let capture = Capture::default();
    let _guard = tracing::subscriber::set_default(capture.clone());
    let store = MemoryStore::new();
    let manager = Manager::builder(store.connect(), Duplicated, Sticky::default())
        .config(Config::default())
        .start()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(120)).await;
    let warnings = |lines: &[Line]| lines.iter().filter(|l| l.level <= Level::WARN).count();
    let lines = capture.lines();
    // Two minutes of a source with a duplicate: a report, then at most one per quiet period.
    assert!(
        warnings(&lines) <= 120 / 5 + 1,
        "{} warnings in 2 minutes: {:#?}",
        warnings(&lines),
        &lines[..lines.len().min(10)]
    );
    manager.stop().await.unwrap();
}

/// A refresh of the partition set and a graceful leave are rebalances, not emergencies: no
/// worker enters `Emergency` for them. (Revokes drain for 5 s, so the handoffs last longer
/// than a renewal of the leader's entry, which is what carries the phase to the workers.)
#[tokio::test(start_paused = true)]
async fn a_refresh_and_a_leave_put_no_worker_in_emergency() {
    use parti_core::runtime::{Hooks, Transition};
    use tokio::sync::mpsc::UnboundedReceiver;

    fn states(rx: &mut UnboundedReceiver<Transition>) -> Vec<ManagerState> {
        std::iter::from_fn(|| rx.try_recv().ok())
            .map(|t| t.to)
            .collect()
    }

    let store = MemoryStore::new();
    let source = StaticSource::numbered("p", 12).unwrap();
    let mut managers = Vec::new();
    for _ in 0..3 {
        let hooks = Hooks::new().on_revoked(|_, _| tokio::time::sleep(Duration::from_secs(5)));
        let manager = Manager::builder(store.connect(), source.clone(), Sticky::default())
            .hooks(hooks)
            .start()
            .await
            .unwrap();
        managers.push(manager);
    }
    stable(&managers).await;
    let mut transitions: Vec<_> = managers
        .iter()
        .map(Manager::subscribe_transitions)
        .collect();
    // Half the partitions replaced: revokes on every worker.
    let mut next = StaticSource::numbered("p", 6).unwrap().get();
    next.extend(StaticSource::numbered("q", 10).unwrap().get());
    source.set(next);
    managers[0].refresh_partitions().await.unwrap();
    settled_on(&managers, 16).await;
    let owned: usize = managers.iter().map(|m| m.assignment().len()).sum();
    assert_eq!(owned, 16);
    let seen: Vec<Vec<ManagerState>> = transitions.iter_mut().map(states).collect();
    assert!(
        seen.iter()
            .flatten()
            .any(|s| *s == ManagerState::Rebalancing),
        "the phase reached the workers: {seen:?}"
    );
    assert!(
        !seen.iter().flatten().any(|s| *s == ManagerState::Emergency),
        "{seen:?}"
    );

    let at = managers.iter().position(|m| !m.is_leader()).unwrap();
    let leaving = managers.remove(at);
    transitions.remove(at);
    leaving.stop().await.unwrap();
    settled_on(&managers, 16).await;
    let seen: Vec<Vec<ManagerState>> = transitions.iter_mut().map(states).collect();
    assert!(
        !seen.iter().flatten().any(|s| *s == ManagerState::Emergency),
        "{seen:?}"
    );
    for manager in managers {
        manager.stop().await.unwrap();
    }
}

/// A worker cut off from its store for two minutes: each kind of failure (by what it was
/// doing) is logged and passed to `on_error` once, then at most once per quiet period with
/// a count — not once per retry of every task (7–9 a second per worker, before). The
/// worker comes back by itself when the store does.
#[tokio::test(start_paused = true)]
async fn a_store_outage_is_reported_once_per_kind_then_counted() {
    use parti_core::runtime::Hooks;

    let capture = Capture::default();
    let _guard = tracing::subscriber::set_default(capture.clone());
    let store = MemoryStore::new();
    let source = StaticSource::numbered("p", 12).unwrap();
    let errors = Arc::new(AtomicU64::new(0));
    let mut managers = Vec::new();
    let mut connections = Vec::new();
    for _ in 0..3 {
        let connection = store.connect();
        let counted = errors.clone();
        let hooks = Hooks::new().on_error(move |_| {
            counted.fetch_add(1, Ordering::Relaxed);
        });
        let manager = Manager::builder(connection.clone(), source.clone(), Sticky::default())
            .hooks(hooks)
            .start()
            .await
            .unwrap();
        managers.push(manager);
        connections.push(connection);
    }
    stable(&managers).await;
    let before = capture.lines().len();
    errors.store(0, Ordering::Relaxed);

    let cut = managers.iter().position(|m| !m.is_leader()).unwrap();
    let cut_id = managers[cut].worker_id();
    let outage = Duration::from_secs(120);
    connections[cut].disconnect();
    tokio::time::sleep(outage).await;

    let lines = capture.lines();
    let warnings: Vec<&Line> = lines[before..]
        .iter()
        .filter(|l| l.level <= Level::WARN)
        .collect();
    // A kind is what the line says before its error: "<context>: <error>".
    let mut kinds: HashMap<String, usize> = HashMap::new();
    for line in &warnings {
        let message = line
            .fields
            .split(" message=")
            .nth(1)
            .unwrap_or(&line.fields);
        let kind = message.split(':').next().unwrap_or(message).to_owned();
        *kinds.entry(kind).or_default() += 1;
    }
    let per_kind = (outage.as_secs() / 5 + 1) as usize;
    assert!(
        kinds.values().all(|&n| n <= per_kind),
        "at most {per_kind} lines of one kind in {outage:?}: {kinds:#?}"
    );
    assert!(
        warnings.len() <= 5 * per_kind,
        "{} warnings in {outage:?} ({kinds:#?})",
        warnings.len()
    );
    assert!(
        warnings
            .iter()
            .any(|l| l.spans.join(":").contains(&cut_id.to_string())),
        "the outage was reported: {kinds:#?}"
    );
    let reported = errors.load(Ordering::Relaxed) as usize;
    assert!(
        (1..=warnings.len()).contains(&reported),
        "on_error was called {reported} times for {} warnings",
        warnings.len()
    );

    connections[cut].reconnect();
    settled_on(&managers, 12).await;
    for manager in managers {
        manager.stop().await.unwrap();
    }
}
