import Dispatch
import Foundation
import Logging
import NIOConcurrencyHelpers
import ServiceLifecycle

/// SIGTERM and SIGINT for `serve` (docs/operations.md#running-as-a-service-engage-sync-serve): the
/// first starts the service group's graceful
/// shutdown, a second exits at once with status 1 (whoever signals twice will not wait; rows
/// claimed and not recorded return when their lease expires, as after a crash).
///
/// This is the process's only handler for the two signals: the group is given none, because a
/// second dispatch source for the same signal, cancelled by the group once it has heard the
/// first, can leave the second unheard. The sources live on a queue of their own, so a busy
/// cooperative pool cannot delay the exit either.
final class ShutdownSignals {
    private let sources: [DispatchSourceSignal]

    /// Listens from the moment it returns (it waits until both sources are registered).
    init(group: ServiceGroup, logger: Logger) async {
        let queue = DispatchQueue(label: "engage-sync.serve.signals")
        let heard = NIOLockedValueBox(0)
        var sources: [DispatchSourceSignal] = []
        for (number, name) in [(SIGTERM, "SIGTERM"), (SIGINT, "SIGINT")] {
            let source = DispatchSource.makeSignalSource(signal: number, queue: queue)
            source.setEventHandler {
                let count = heard.withLockedValue { count in
                    count += 1
                    return count
                }
                if count == 1 {
                    logger.notice("\(name): shutting down gracefully; a second signal exits at once")
                    Task { await group.triggerGracefulShutdown() }
                } else {
                    logger.warning("a second signal (\(name)): exiting at once; rows claimed and not recorded return when their lease expires")
                    _exit(1)
                }
            }
            await withCheckedContinuation { (registered: CheckedContinuation<Void, Never>) in
                source.setRegistrationHandler { registered.resume() }
                source.resume()
            }
            sources.append(source)
        }
        self.sources = sources
    }

    /// Stops listening, once the service group has ended.
    func cancel() {
        for source in sources { source.cancel() }
    }
}
