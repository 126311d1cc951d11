// Reading Prometheus text in tests: every sample as name, labels and value.

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;

export function parseMetrics(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const m = SAMPLE.exec(line);
    if (!m?.[1] || m[3] === undefined) throw new Error(`not a Prometheus sample: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? "").matchAll(LABEL)) {
      labels[l[1] as string] = (l[2] as string).replace(/\\(.)/g, (_, c: string) =>
        c === "n" ? "\n" : c,
      );
    }
    samples.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return samples;
}

/**
 * The value of the one sample of `name` whose labels include `labels`; undefined when there is
 * none. Several matches are a mistake in the test (it must name the series exactly).
 */
export function metricValue(
  text: string,
  name: string,
  labels: Record<string, string> = {},
): number | undefined {
  const found = parseMetrics(text).filter(
    (s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v),
  );
  if (found.length > 1) {
    throw new Error(
      `${found.length} series of ${name} match ${JSON.stringify(labels)}: ${found
        .map((s) => JSON.stringify(s.labels))
        .join(", ")}`,
    );
  }
  return found[0]?.value;
}

/** Names of every metric family the text declares (its `# TYPE` lines). */
export function metricFamilies(text: string): Set<string> {
  const names = new Set<string>();
  for (const line of text.split("\n")) {
    if (line.startsWith("# TYPE ")) names.add(line.split(" ")[2] ?? "");
  }
  return names;
}
