//! Helpers for adapter tests: a context wired to channels the test holds,
//! and building an adapter kind from TOML text.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::adapter::{
    AdapterContext, AdapterKind, BuiltAdapter, CommandInbox, DeviceOwners, Health,
};
use crate::adapter::{UplinkEnvelope, UplinkSender};
use crate::command::{Command, CommandRequest, Outcome};
use crate::config::{BuildContext, ConfigIssue, Node, Section, SourceFile};
use crate::refusals::Refusals;

/// The test's side of an [`AdapterContext`].
pub struct TestHarness {
    pub uplinks: mpsc::Receiver<UplinkEnvelope>,
    pub commands: mpsc::Sender<CommandRequest>,
    pub shutdown: CancellationToken,
    pub health: Health,
    pub refusals: Refusals,
}

impl TestHarness {
    /// Send a command to the adapter and wait for its outcome.
    pub async fn command(&self, command: Command) -> Outcome {
        let (request, rx) = CommandRequest::new(command);
        if self.commands.send(request).await.is_err() {
            panic!("adapter stopped receiving commands");
        }
        rx.await
            .expect("adapter dropped the command without answering")
    }
}

/// A context for an adapter named `name`, and the test's handles on it.
pub fn context(name: &str) -> (AdapterContext, TestHarness) {
    context_with_owners(name, DeviceOwners::default())
}

/// Like [`context`], with configured devices owned by other adapters.
pub fn context_with_owners(name: &str, owners: DeviceOwners) -> (AdapterContext, TestHarness) {
    let (up_tx, up_rx) = mpsc::channel(1024);
    let (cmd_tx, cmd_rx) = mpsc::channel(64);
    let shutdown = CancellationToken::new();
    let health = Health::default();
    let refusals = Refusals::default();
    let ctx = AdapterContext {
        name: name.to_string(),
        uplink: UplinkSender::new(Arc::<str>::from(name), up_tx),
        commands: CommandInbox::new(cmd_rx),
        shutdown: shutdown.clone(),
        health: health.clone(),
        refusals: refusals.clone(),
        owners,
    };
    let harness = TestHarness {
        uplinks: up_rx,
        commands: cmd_tx,
        shutdown,
        health,
        refusals,
    };
    (ctx, harness)
}

/// Build `kind` from one TOML document, as `conf.d/test.toml`, with
/// optional profiles given as `(name, toml text)`.
pub fn build(
    kind: &dyn AdapterKind,
    toml: &str,
    profiles: &[(&str, &str)],
) -> Result<Vec<BuiltAdapter>, Vec<ConfigIssue>> {
    let file = SourceFile::new("conf.d/test.toml", toml.to_string());
    let doc = file.parse()?;
    let profile_files: Vec<SourceFile> = profiles
        .iter()
        .map(|(name, text)| SourceFile::new(format!("profiles/{name}.toml"), text.to_string()))
        .collect();
    let mut profile_docs = Vec::new();
    for f in &profile_files {
        profile_docs.push(f.parse()?);
    }
    let mut ctx = BuildContext::default();
    for ((name, _), (file, doc)) in profiles.iter().zip(profile_files.iter().zip(&profile_docs)) {
        ctx.profiles.insert(name.to_string(), Node::new(file, doc));
    }
    let root = Node::new(&file, &doc);
    let parts = root.get(kind.key()).into_iter().collect();
    kind.build(&Section::new(kind.key(), parts), &ctx)
}
