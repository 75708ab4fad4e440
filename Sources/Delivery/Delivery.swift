/// Delivery: moves the queue. `RoutePlanner` (pure) turns DNS answers into the hosts to try, with the
/// backup-MX rule; `Courier` speaks SMTP to them through `ClientSession` over blocking sockets on the
/// delivery threads; `QueueRunner` schedules attempts, records per-recipient outcomes durably,
/// retries on `RetrySchedule` and bounces with `DSN`. Never touches an event loop or the cooperative
/// pool; the receiving side only tells it that a message arrived.
public enum Delivery {}
