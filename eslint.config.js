// Lint: typescript-eslint strict-type-checked plus the project's own rules (see ARCHITECTURE.md):
// no shell spawning, process.exit only in main.ts, and the layering rules of the design guide.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

/** Modules that may only import errdefs, log, util and themselves (design: leaf services). */
const leafModules = ['oci', 'network', 'snapshot', 'store', 'streaming', 'config'];

/** Restricted import patterns for a module under src/. */
function layering(module) {
  const patterns = [
    { group: ['**/cri/**', '**/cri/*'], message: 'nothing imports cri/: it is the top layer' },
    { group: ['@grpc/grpc-js', '@grpc/*'], message: 'only cri/ and tests talk gRPC' },
    { group: ['**/daemon.js', '**/main.js'], message: 'only main.ts imports the daemon' },
  ];
  if (leafModules.includes(module)) {
    patterns.push({
      group: [
        '../image/**',
        '../sandbox/**',
        '../container/**',
        '../oci/**',
        '../network/**',
        '../snapshot/**',
        '../store/**',
        '../streaming/**',
        '../config/**',
      ].filter((p) => !p.startsWith(`../${module}/`)),
      message: `${module}/ may only import errdefs, log and util`,
    });
  }
  return {
    files: [`src/${module}/**/*.ts`],
    rules: { 'no-restricted-imports': ['error', { patterns }] },
  };
}

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'src/cri/gen/**', 'eslint.config.js'] },
  js.configs.recommended,
  ...tseslint.configs.strictTypeChecked,
  {
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    rules: {
      // Handlers are async so that a throw becomes a rejection the wrapper maps; they need not await.
      '@typescript-eslint/require-await': 'off',
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': 'error',
      '@typescript-eslint/restrict-template-expressions': [
        'error',
        { allowNumber: true, allowBoolean: true },
      ],
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      'no-restricted-properties': [
        'error',
        { object: 'process', property: 'exit', message: 'only src/main.ts may exit the process' },
        {
          object: 'child_process',
          property: 'exec',
          message: 'spawn argument arrays via util/exec, never a shell',
        },
        {
          object: 'child_process',
          property: 'execSync',
          message: 'spawn argument arrays via util/exec, never a shell',
        },
      ],
      'no-restricted-syntax': [
        'error',
        {
          selector: "Property[key.name='shell'][value.value=true]",
          message: 'never spawn through a shell: pass an argument array',
        },
      ],
    },
  },
  { files: ['src/main.ts'], rules: { 'no-restricted-properties': 'off' } },
  ...[
    'image',
    'sandbox',
    'container',
    'util',
    'oci',
    'network',
    'snapshot',
    'store',
    'streaming',
    'config',
  ].map(layering),
  {
    files: ['test/**/*.ts', 'bench/**/*.ts'],
    rules: {
      '@typescript-eslint/no-non-null-assertion': 'off',
      'no-restricted-properties': 'off',
    },
  },
);
