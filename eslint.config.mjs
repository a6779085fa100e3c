// @ts-check
import eslint from '@eslint/js';
import prettier from 'eslint-config-prettier';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  {
    ignores: [
      'node_modules/**',
      'cdk.out/**',
      '.corpus-local/**',
      '.bench-tmp/**',
      'bench/.data/**',
      'coverage/**',
      '**/*.cjs',
      '**/*.mjs',
      'jest.config.js',
    ],
  },
  eslint.configs.recommended,
  ...tseslint.configs.recommended,
  {
    // Type-aware: one program from tsconfig.json (which includes every linted file) so the rules can see promises.
    // require-await stays off: its ~100 hits are async stubs and implementations of Promise-returning interfaces,
    // where `async` is what turns a throw into the rejection callers expect.
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': 'error',
      '@typescript-eslint/await-thenable': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      'no-console': 'off',
    },
  },
  {
    // lib/ is deployable infrastructure: configuration arrives through typed props, never the environment.
    files: ['lib/**/*.ts'],
    rules: {
      'no-restricted-properties': [
        'error',
        { object: 'process', property: 'env', message: 'Read config in bin/ and pass typed props.' },
      ],
    },
  },
  prettier,
);
