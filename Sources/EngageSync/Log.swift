import Logging

/// The loggers of each part. The CLI routes them to standard error at the level set by
/// `ENGAGE_SYNC_LOG_LEVEL` (default `warning`). Nothing logged ever holds an auth token:
/// request bodies are logged as mapped, before the token is added.
enum Log {
    static let sync = Logger(label: "engage-sync.sync")
    static let delivery = Logger(label: "engage-sync.delivery")
    static let ingest = Logger(label: "engage-sync.ingest")
}
