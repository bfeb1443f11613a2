//! Identities of the operations a machine asks its executor to carry out.

/// Identifies one operation a machine asked for (a store call, a hook), so that a late
/// completion of an abandoned one is recognised and ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpId(pub(crate) u64);

/// Hands out operation ids, each once.
#[derive(Debug, Clone, Default)]
pub(crate) struct OpIds(u64);

impl OpIds {
    pub(crate) fn next(&mut self) -> OpId {
        self.0 += 1;
        OpId(self.0)
    }
}
