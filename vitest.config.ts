import { defineConfig } from 'vitest/config';

// Two projects (design guide): `unit` runs in parallel without root; `e2e` runs files one at a time,
// as root, against real runc/conmon/registries, each file checking it leaves nothing behind.
export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: 'unit',
          include: ['test/unit/**/*.test.ts'],
          testTimeout: 20_000,
        },
      },
      {
        test: {
          name: 'e2e',
          include: ['test/e2e/**/*.test.ts'],
          pool: 'forks',
          poolOptions: { forks: { singleFork: true } },
          testTimeout: 120_000,
          hookTimeout: 120_000,
        },
      },
    ],
  },
});
