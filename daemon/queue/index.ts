/**
 * Queue mode: jobs on BullMQ over Redis, run by `invarx worker` processes on any machine,
 * served to clients by `invarx daemon --queue` with the same verbs as the local daemon.
 */
export { QueueJobs } from './queueJobs';
export { QueueWorker } from './queueWorker';
export { serveQueueThread } from './jobThread';
export { parseQueueUrl, type QueueUrl } from './redisUrl';
export { probeRedis } from './connect';
export { DEFAULT_QUEUE_SETTINGS, type QueueSettings } from './settings';
