//! The domain: validated hook events and the participant timeline they fold into. No I/O.

pub mod append;
pub mod idempotency;
pub mod ingest;
pub mod timeline;
pub mod timestamp;
pub mod types;

pub use append::{
    AppendPlan, ParticipantRow, StintRow, Stored, StoredParticipant, Summary, plan_append,
};
pub use ingest::{Action, BodyError, ConversationId, Event, FieldError, IngestBatch};
pub use timeline::{Anomaly, ExitType, ParticipantTimeline, Status, Stint, Timeline, Transfers};
pub use types::{EventName, Experience, Participant, TransferType, Transition};
