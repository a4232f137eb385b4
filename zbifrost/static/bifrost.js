export class BifrostClient {}
