//! gpufed pure settlement state machine: usage journal, batches, exactly-once bookkeeping.
