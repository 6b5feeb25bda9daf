export { DDPMScheduler } from './ddpm.js';
export { DDIMScheduler, type DDIMStepOptions } from './ddim.js';
export { PNDMScheduler } from './pndm.js';
export { EulerDiscreteScheduler } from './euler.js';
export { EulerAncestralDiscreteScheduler } from './euler_ancestral.js';
export { DPMSolverMultistepScheduler } from './dpm_solver_multistep.js';
export { LMSDiscreteScheduler, type LMSStepOptions } from './lms.js';
export { LCMScheduler } from './lcm.js';
export { SchedulerBase, parseConfigJson, type SchedulerConfig, type StepOptions, type StepResult } from './base.js';
