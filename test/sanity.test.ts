import { expect } from 'chai';
import { which } from './helpers/env.js';

describe('test environment', () => {
  it('runs TypeScript tests with node and finds binaries on PATH', () => {
    expect(which('node')).to.be.a('string');
  });
});
