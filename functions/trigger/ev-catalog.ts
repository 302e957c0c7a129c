// The EV catalog (vehicles, charger mix, efficiencies) the charging simulator
// draws from. The catalog is part of the project: functions/trigger/ev-vehicles.json, imported
// as a module, so esbuild inlines it into every bundle that uses it (the trigger)
// and no file is read at run time. EV_CATALOG (a path) overrides it.
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import bundledCatalog from './ev-vehicles.json' with { type: 'json' };

/** A [SoC %, kW] point of a DC charging curve. */
const CurvePointSchema = z.tuple([z.number().min(0).max(100), z.number().nonnegative()]);

/** [low, high] efficiency range, 0 < low <= high <= 1. */
const EfficiencyRangeSchema = z
  .tuple([z.number().gt(0).lte(1), z.number().gt(0).lte(1)])
  .refine(([lo, hi]) => lo <= hi, { message: 'low efficiency must be <= high efficiency' });

export const CatalogVehicleSchema = z.object({
  make: z.string().min(1),
  model: z.string().min(1),
  usableKWh: z.number().positive(),
  acMaxKW: z.number().positive(),
  dcMaxKW: z.number().positive(),
  dcCurve: z.array(CurvePointSchema).min(2).superRefine((curve, ctx) => {
    for (let i = 1; i < curve.length; i++) {
      const prev = curve[i - 1];
      const cur = curve[i];
      if (prev && cur && cur[0] < prev[0]) {
        ctx.addIssue({ code: 'custom', path: [i, 0], message: `SoC ${cur[0]} is below the previous point's ${prev[0]} (points must be sorted by SoC)` });
      }
    }
  }),
  approx: z.boolean().optional(),
});
export type CatalogVehicle = z.infer<typeof CatalogVehicleSchema>;

export const CatalogChargerSchema = z.object({
  type: z.enum(['AC', 'DC']),
  maxKW: z.number().positive(),
  /** AC only: 1 or 3 phases (default 1). */
  phases: z.union([z.literal(1), z.literal(3)]).optional(),
  voltageV: z.number().positive(),
  share: z.number().nonnegative(),
});
export type CatalogCharger = z.infer<typeof CatalogChargerSchema>;

export const CatalogSchema = z.object({
  about: z.string().optional(),
  efficiency: z.object({ ac: EfficiencyRangeSchema, dc: EfficiencyRangeSchema }),
  chargers: z.array(CatalogChargerSchema).min(1).superRefine((chargers, ctx) => {
    const total = chargers.reduce((s, c) => s + c.share, 0);
    if (!(total > 0)) ctx.addIssue({ code: 'custom', message: 'the charger shares must add up to more than 0' });
  }),
  vehicles: z.array(CatalogVehicleSchema).min(1),
  taper: z.string().optional(),
  temperatureDerate: z.object({ about: z.string().optional(), points: z.array(z.tuple([z.number(), z.number().nonnegative()])) }).optional(),
});
export type Catalog = z.infer<typeof CatalogSchema>;

function formatPath(path: ReadonlyArray<PropertyKey>): string {
  let out = '';
  for (const key of path) {
    if (typeof key === 'number') out += `[${key}]`;
    else out += out ? `.${String(key)}` : String(key);
  }
  return out || '(root)';
}

/** Validates a parsed catalog; the error message names every bad field, e.g. `vehicles[3].usableKWh`. */
export function parseCatalog(json: unknown): Catalog {
  const result = CatalogSchema.safeParse(json);
  if (result.success) return result.data;
  const lines = result.error.issues.map((i) => `${formatPath(i.path)}: ${i.message}`);
  throw new Error(`invalid EV catalog: ${lines.join('; ')}`);
}

/** Where the catalog that ships with the project comes from (named in errors). */
export const BUNDLED_CATALOG = 'functions/trigger/ev-vehicles.json (bundled)';

/**
 * The validated catalog. Without a path (or with an empty one) it is the catalog that
 * ships with the project, functions/trigger/ev-vehicles.json, bundled into the code: nothing is read
 * from disk. With a path (EV_CATALOG; a string relative to the cwd, or a URL) it reads
 * and validates that file instead.
 */
export function loadCatalog(path?: string | URL): Catalog {
  if (path === undefined || path === '') {
    try {
      return parseCatalog(bundledCatalog);
    } catch (err) {
      throw new Error(`${(err as Error).message} (in ${BUNDLED_CATALOG})`, { cause: err });
    }
  }
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new Error(`cannot read EV catalog ${String(path)}: ${(err as Error).message}`, { cause: err });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new Error(`EV catalog ${String(path)} is not valid JSON: ${(err as Error).message}`, { cause: err });
  }
  try {
    return parseCatalog(json);
  } catch (err) {
    throw new Error(`${(err as Error).message} (in ${String(path)})`, { cause: err });
  }
}
