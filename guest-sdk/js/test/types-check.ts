// Compiled by types.test.js with `tsc --noEmit`: the declarations describe a
// TypeScript processor as a tenant would write it.
import {
  type Context,
  type Record,
  type Settings,
  Outcome,
  PerPartition,
  Processor,
  Reject,
  Retry,
  TopicNotAllowed,
  TopicPartition,
  exportProcessor,
  transient,
} from '../src/index.js';
import { Harness, TestBatch } from '../src/testing.js';

class Typed extends Processor {
  topic = 'out';
  limit = 0;
  counts = new PerPartition<number>(() => 0);

  override configure(settings: Settings): void {
    this.topic = settings.get('output_topic') ?? this.topic;
    const limit: number = settings.parseOr('limit', 10, 'int');
    const flag: boolean | undefined = settings.parse('flag', 'bool');
    const custom: Date = settings.parseRequired('since', (text) => new Date(text));
    this.limit = flag ? limit : custom.getTime();
  }

  override process(record: Record, ctx: Context): void {
    const value: string | null = record.valueText();
    if (value === null) throw new Reject('tombstone');
    const offset: bigint = record.offset;
    this.counts.set(record.topic, record.partition, this.counts.of(record) + 1);
    transient(() => ctx.emitKv(this.topic, record.key ?? '', value));
    ctx.emit({ topic: this.topic, value: record.value, headers: record.headers });
    ctx.forRecord(record, (c) => c.info(`offset ${offset}`));
    if (value === 'later') throw new Retry('later');
  }

  override revoked(partition: TopicPartition): void {
    this.counts.revoke(partition);
  }
}

exportProcessor(Typed);

const run = new Harness().allowTopic('out').capabilities('output', 'log').run(new Typed(), new TestBatch('in', 0).record('k', 'v'));
const outcomes: Outcome[] = run.outcomes;
const first: bigint | null = run.emitted[0].source;
const refused: TopicNotAllowed = new TopicNotAllowed('x');
void [outcomes, first, refused];
