//! The journal: each ended attempt's record, written by the same script that ends the
//! attempt (or by the reaper for a lost one) and kept until PostgreSQL has it, so a
//! worker killed before its history batch lands loses nothing. Entries a live worker
//! does not acknowledge within seconds are replayed into PostgreSQL by the recovery
//! loop (`maintenance::recovery`).

use std::time::Duration;

use super::{QueueError, RedisQueue};
use crate::domain::QueueName;

impl RedisQueue {
    /// Keeps each `(entry, record)` in the journal until PostgreSQL has it.
    ///
    /// # Errors
    /// Redis unreachable.
    pub async fn journal_put(
        &self,
        queue: &QueueName,
        records: &[(String, String)],
    ) -> Result<(), QueueError> {
        if records.is_empty() {
            return Ok(());
        }
        let k = self.keys.queue(queue);
        let mut call = self.scripts().journal_put.prepare_invoke();
        call.key(&k.journal).key(&k.journal_at);
        for (entry, record) in records {
            call.arg(entry).arg(record);
        }
        let _: i64 = call.invoke_async(&mut self.conn()).await?;
        Ok(())
    }

    /// Drops journal entries whose records PostgreSQL now holds.
    ///
    /// # Errors
    /// Redis unreachable.
    pub async fn journal_ack(
        &self,
        queue: &QueueName,
        entries: &[String],
    ) -> Result<(), QueueError> {
        if entries.is_empty() {
            return Ok(());
        }
        let k = self.keys.queue(queue);
        let mut call = self.scripts().journal_ack.prepare_invoke();
        call.key(&k.journal).key(&k.journal_at);
        for entry in entries {
            call.arg(entry);
        }
        let _: i64 = call.invoke_async(&mut self.conn()).await?;
        Ok(())
    }

    /// Journal entries written more than `age` ago (no worker acknowledged them), oldest
    /// first: `(entry, record)`.
    ///
    /// # Errors
    /// Redis unreachable.
    pub async fn journal_older_than(
        &self,
        queue: &QueueName,
        age: Duration,
        limit: usize,
    ) -> Result<Vec<(String, String)>, QueueError> {
        let k = self.keys.queue(queue);
        let before = chrono::Utc::now().timestamp_millis() - age.as_millis() as i64;
        let mut conn = self.conn();
        let entries: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(&k.journal_at)
            .arg("-inf")
            .arg(before)
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .query_async(&mut conn)
            .await?;
        if entries.is_empty() {
            return Ok(vec![]);
        }
        let records: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(&k.journal)
            .arg(&entries)
            .query_async(&mut conn)
            .await?;
        let mut found = Vec::new();
        let mut dangling = Vec::new();
        for (entry, record) in entries.into_iter().zip(records) {
            match record {
                Some(record) => found.push((entry, record)),
                // Acknowledged between the two reads.
                None => dangling.push(entry),
            }
        }
        self.journal_ack(queue, &dangling).await?;
        Ok(found)
    }
}
